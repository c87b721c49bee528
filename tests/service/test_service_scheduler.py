"""Scheduler on a fake engine: batching, unbatched baseline, cancel between steps,
fairness across clients, queue bounds, out-of-memory isolation, shutdown."""

from __future__ import annotations

import threading
import time

import pytest

from diffusion_core import protocol
from diffusion_core.serving.scheduler import Busy, Scheduler, SchedulerConfig
from tests.service.service_fakes import FakeBackend, expected_texts

TIMEOUT = 10.0


class Collector:
    """on_done callbacks land here; wait() blocks until n outcomes arrived."""

    def __init__(self):
        self.outcomes = []  # (tag, outcome) in completion order
        self.cond = threading.Condition()

    def cb(self, tag):
        def on_done(outcome):
            with self.cond:
                self.outcomes.append((tag, outcome))
                self.cond.notify_all()
        return on_done

    def wait(self, n):
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.outcomes) >= n, TIMEOUT), self.outcomes
        return dict(self.outcomes)


def prepared(tag: str, budgets=(4,), **params):
    segments = [f"pre-{tag}"] + [f"post{i}-{tag}" for i in range(len(budgets))]
    return segments, list(budgets), params


def run_requests(batched: bool):
    backend = FakeBackend()
    sched = Scheduler(backend, SchedulerConfig(batched=batched, max_batch=8))
    got = Collector()
    reqs = {f"r{i}": prepared(f"r{i}", budgets=[i + 1] * (1 + i % 3), steps=2 + i) for i in range(6)}
    for tag, prep in reqs.items():
        sched.submit(tag, prep, got.cb(tag))  # all queued before the thread starts: one batch
    sched.start()
    outcomes = got.wait(len(reqs))
    sched.stop()
    return backend, reqs, outcomes


def test_batched_steps_share_forward_passes_and_match_unbatched():
    backend_b, reqs, batched = run_requests(batched=True)
    backend_u, _, unbatched = run_requests(batched=False)
    for tag, (segments, budgets, _) in reqs.items():
        assert batched[tag].code is None and unbatched[tag].code is None
        assert batched[tag].result.texts == unbatched[tag].result.texts == expected_texts(segments, budgets)
    assert backend_b.batches[0] == 6  # every request in the first forward pass
    assert max(backend_u.batches) == 1
    assert sum(backend_b.batches) == sum(backend_u.batches)  # same work, fewer passes
    assert len(backend_b.batches) < len(backend_u.batches)
    assert batched["r5"].max_batch == 6 and unbatched["r5"].max_batch == 1


def test_max_batch_bounds_the_batch():
    backend = FakeBackend()
    sched = Scheduler(backend, SchedulerConfig(max_batch=3))
    got = Collector()
    for i in range(7):
        sched.submit(i, prepared(str(i), steps=2), got.cb(i))
    sched.start()
    got.wait(7)
    sched.stop()
    assert max(backend.batches) == 3
    assert sched.counters["completed"] == 7


def test_cancel_active_job_between_steps():
    backend = FakeBackend(step_delay=0.005)
    sched = Scheduler(backend)
    got = Collector()
    sched.start()
    ticket = sched.submit("a", prepared("long", steps=100000), got.cb("long"))
    deadline = time.monotonic() + TIMEOUT
    while not backend.begun or backend.begun[0].steps_done < 3:
        assert time.monotonic() < deadline
        time.sleep(0.002)
    assert sched.cancel(ticket)
    outcome = got.wait(1)["long"]
    assert outcome.code == protocol.E_CANCELLED
    steps = backend.begun[0].steps_done
    time.sleep(0.05)
    assert backend.begun[0].steps_done == steps  # no step after the cancel was answered
    assert not sched.cancel(ticket)  # already finished
    # the engine thread keeps serving
    sched.submit("a", prepared("next"), got.cb("next"))
    assert got.wait(2)["next"].code is None
    sched.stop()


def test_cancel_waiting_ticket_is_answered_at_once():
    sched = Scheduler(FakeBackend())
    got = Collector()
    ticket = sched.submit("a", prepared("x"), got.cb("x"))  # not started: it waits
    assert sched.cancel(ticket)
    assert got.wait(1)["x"].code == protocol.E_CANCELLED
    assert sched.snapshot()["waiting"] == 0


def test_fairness_round_robin_across_clients():
    backend = FakeBackend()
    sched = Scheduler(backend, SchedulerConfig(max_batch=1))
    got = Collector()
    for i in range(5):
        sched.submit("flood", prepared(f"a{i}", steps=1), got.cb(f"a{i}"))
    sched.submit("quiet", prepared("b0", steps=1), got.cb("b0"))
    sched.start()
    got.wait(6)
    sched.stop()
    order = [tag for tag, _ in got.outcomes]
    assert order.index("b0") == 1, order  # the quiet client goes second, not sixth
    assert [t for t in order if t.startswith("a")] == [f"a{i}" for i in range(5)]  # FIFO per client


def test_queue_bounds_answer_busy():
    sched = Scheduler(FakeBackend(), SchedulerConfig(max_queue=3, max_per_client=2))
    got = Collector()
    sched.submit("a", prepared("1"), got.cb(1))
    sched.submit("a", prepared("2"), got.cb(2))
    with pytest.raises(Busy, match="this client"):
        sched.submit("a", prepared("3"), got.cb(3))
    sched.submit("b", prepared("4"), got.cb(4))
    with pytest.raises(Busy, match="busy: 3 requests queued"):
        sched.submit("c", prepared("5"), got.cb(5))
    assert sched.snapshot()["counters"]["busy"] == 2
    sched.start()
    assert all(o.code is None for o in got.wait(3).values())
    sched.stop()


def test_out_of_memory_fails_only_that_request():
    backend = FakeBackend()
    sched = Scheduler(backend)
    got = Collector()
    sched.submit("a", prepared("ok1", steps=2), got.cb("ok1"))
    sched.submit("b", prepared("oom", oom=True), got.cb("oom"))
    sched.submit("c", prepared("ok2", steps=2), got.cb("ok2"))
    sched.start()
    out = got.wait(3)
    assert out["oom"].code == protocol.E_OUT_OF_MEMORY and "out of memory" in out["oom"].message
    assert out["ok1"].code is None and out["ok2"].code is None
    assert sched.counters["batch_retries"] >= 1
    sched.submit("a", prepared("after"), got.cb("after"))  # still alive
    assert got.wait(4)["after"].code is None
    sched.stop()


def test_begin_errors_become_codes_and_the_thread_lives():
    sched = Scheduler(FakeBackend())
    got = Collector()
    sched.start()
    sched.submit("a", prepared("x", fail="invalid"), got.cb("invalid"))
    sched.submit("a", prepared("y", fail="begin"), got.cb("boom"))
    sched.submit("a", prepared("z"), got.cb("fine"))
    out = got.wait(3)
    assert out["invalid"].code == protocol.E_INVALID_PARAMS and "segments[0]" in out["invalid"].message
    assert out["boom"].code == protocol.E_INTERNAL and "begin exploded" in out["boom"].message
    assert out["fine"].code is None
    sched.stop()


def test_stop_fails_queued_with_shutting_down():
    sched = Scheduler(FakeBackend(step_delay=0.01))
    got = Collector()
    sched.start()
    for i in range(4):
        sched.submit(i, prepared(str(i), steps=10000), got.cb(i))
    sched.stop()
    out = got.wait(4)
    assert {o.code for o in out.values()} == {protocol.E_SHUTTING_DOWN}
    with pytest.raises(Busy):
        sched.submit(9, prepared("late"), got.cb(9))


def test_admission_while_jobs_are_active_is_bounded_per_step():
    backend = FakeBackend(step_delay=0.002)
    sched = Scheduler(backend, SchedulerConfig(max_batch=8, admit_per_step=2))
    got = Collector()
    sched.submit("first", prepared("first", steps=400), got.cb("first"))
    sched.start()
    while not backend.begun:
        time.sleep(0.001)
    for i in range(6):  # arrive together while "first" is mid-denoise
        sched.submit(f"c{i}", prepared(f"c{i}", steps=50), got.cb(i))
    got.wait(7)
    sched.stop()
    sizes = backend.batches
    growth = [b for a, b in zip(sizes, sizes[1:]) if b > a]
    assert max(sizes) == 7
    assert all(b - a <= 2 for a, b in zip(sizes, sizes[1:]))  # at most 2 new jobs between steps
    assert growth  # the batch did grow while "first" was active


def test_a_warm_up_runs_only_while_nothing_else_does_and_yields_within_one_step():
    backend = FakeBackend(step_delay=0.02)
    sched = Scheduler(backend, SchedulerConfig())
    got = Collector()
    sched.start()
    try:
        sched.submit("c", prepared("warm", steps=200), got.cb("warm"), idle=True)
        deadline = time.monotonic() + TIMEOUT
        while not backend.begun and time.monotonic() < deadline:
            time.sleep(0.005)
        warm_job = backend.begun[0]
        sched.submit("c", prepared("real", steps=5), got.cb("real"))
        outcomes = got.wait(1)
        assert list(outcomes) == ["real"] and outcomes["real"].code is None
        real_job = backend.begun[1]
        # While the real request ran the warm-up never stepped beside it: every batch held one job.
        assert set(real_job.batch_sizes) == {1}
        # ... and it was paused, not dropped: it resumes once the real request is answered.
        paused_at = warm_job.steps_done
        deadline = time.monotonic() + TIMEOUT
        while warm_job.steps_done <= paused_at + 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert warm_job.steps_done > paused_at + 2
    finally:
        sched.stop()


def test_a_client_keeps_at_most_its_newest_warm_ups():
    backend = FakeBackend()
    sched = Scheduler(backend, SchedulerConfig(max_idle_per_client=2))
    got = Collector()
    tickets = [sched.submit("c", prepared(f"w{i}", steps=1), got.cb(f"w{i}"), idle=True) for i in range(4)]
    outcomes = got.wait(2)  # the two oldest, cancelled by the newer ones, before the thread runs
    assert {t for t, o in outcomes.items() if o.code == protocol.E_CANCELLED} == {"w0", "w1"}
    assert sched.snapshot()["warming"] == 2
    # Warm-ups do not count against the queue bound of real requests.
    assert sched.snapshot()["waiting"] == 0
    sched.start()
    try:
        outcomes = got.wait(4)
        assert outcomes["w2"].code is None and outcomes["w3"].code is None
        assert not any(t.cancelled for t in tickets[2:])
    finally:
        sched.stop()


def test_engine_idle_s_grows_only_while_a_step_runs():
    backend = FakeBackend()
    sched = Scheduler(backend, SchedulerConfig())
    assert sched.engine_idle_s() == 0.0  # no work: not stalled, however long ago the last step was
    got = Collector()
    sched.start()
    try:
        sched.submit("c", prepared("slow", steps=1, delay=0.6), got.cb("slow"))
        time.sleep(0.4)
        assert sched.engine_idle_s() >= 0.3
        got.wait(1)
        assert sched.engine_idle_s() == 0.0
    finally:
        sched.stop()


def test_a_closed_connection_cancels_its_warm_ups_too():
    backend = FakeBackend(step_delay=0.01)
    sched = Scheduler(backend, SchedulerConfig())
    got = Collector()
    sched.submit("gone", prepared("w", steps=500), got.cb("w"), idle=True)
    sched.submit("gone", prepared("f", steps=500), got.cb("f"))
    sched.start()
    try:
        assert sched.cancel_client("gone") == 2
        outcomes = got.wait(2)
        assert {o.code for o in outcomes.values()} == {protocol.E_CANCELLED}
        assert sched.snapshot()["warming"] == 0 and sched.snapshot()["active"] == 0
    finally:
        sched.stop()


def test_memory_is_released_each_time_the_engine_runs_out_of_work_never_between_steps():
    backend = FakeBackend()
    seen = []  # work left (active + waiting tickets) at each release
    sched = Scheduler(backend, on_idle=lambda: seen.append(len(sched._active) + sum(map(len, sched._waiting.values()))))
    got = Collector()
    for i in range(3):
        sched.submit("a", prepared(f"r{i}", steps=3), got.cb(f"r{i}"))
    sched.start()
    got.wait(3)
    deadline = time.monotonic() + TIMEOUT
    while not seen and time.monotonic() < deadline:
        time.sleep(0.01)
    assert seen == [0]  # once, after the last step, with nothing left to do
    sched.submit("a", prepared("later", steps=2), got.cb("later"))
    got.wait(4)
    while len(seen) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)  # an idle engine does not release again and again
    assert seen == [0, 0]
    sched.stop()


@pytest.mark.skipif(__import__("platform").libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_glibc_heap_trim_is_found_and_runs():
    from diffusion_core.serving import scheduler

    assert scheduler._malloc_trim is not None
    scheduler.release_memory()  # returns; the heap's free pages go back to the OS
