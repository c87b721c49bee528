"""An engine thread that dies (issue 22 item 7): a model folder whose tokenizer.json holds a
backtracking regex makes the tokenizer raise pyo3's PanicException, a BaseException the
scheduler's `except Exception` let through; the engine thread died, the core still said
ready, and every later fill waited out its deadline. Now every failure of the engine
thread answers the fills it held, refuses new ones, and the core exits, so the client's
standby (or a restart) takes over."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import threading

import pytest

from diffusion_core import protocol
from diffusion_core.serving.scheduler import Busy, Scheduler
from lsp_server.core_client import CoreClient, CoreRequestError, CoreState
from tests.service.service_fakes import FakeBackend

T = 60.0


class FakePanic(BaseException):
    """What pyo3 raises for a Rust panic: not an Exception."""


class PanickingBackend(FakeBackend):
    def __init__(self, where: str):
        super().__init__(step_delay=0.01)
        self.where = where

    def begin(self, prepared):
        if self.where == "begin" and prepared[2].get("fail") == "panic":
            raise FakePanic("Onig: Regex search error: retry-limit-in-match over")
        return super().begin(prepared)

    def step(self, jobs):
        if self.where == "step" and any(j.params.get("fail") == "panic" for j in jobs):
            raise FakePanic("Onig: Regex search error: retry-limit-in-match over")
        super().step(jobs)


@pytest.mark.parametrize("where", ["begin", "step"])
def test_a_base_exception_answers_every_held_fill_and_fails_the_scheduler(where):
    failures = []
    sched = Scheduler(PanickingBackend(where), on_failure=failures.append)
    outcomes: dict[str, object] = {}
    done = threading.Event()

    def submit(name, params, client="a"):
        def on_done(outcome):
            outcomes[name] = outcome
            if len(outcomes) == 4:
                done.set()
        sched.submit(client, (["x", "y"], [4], params), on_done)

    # Admitted together in this order: at a panic in begin, "later" is taken from the queue
    # but not begun (neither waiting nor active); at a panic in the batched step, all are active.
    submit("slow", {"steps": 50})
    submit("queued", {"steps": 3}, client="b")
    submit("panic", {"steps": 2, "fail": "panic"}, client="c")
    submit("later", {"steps": 3}, client="c")
    sched.start()
    try:
        assert done.wait(10), f"fills left unanswered: {set(['slow', 'queued', 'panic', 'later']) - set(outcomes)}"
        codes = {name: (o.code, o.message) for name, o in outcomes.items()}
        assert all(code == protocol.E_ENGINE_FAILED for code, _ in codes.values() if code), codes
        assert "FakePanic" in codes["panic"][1] and "a fresh core takes over" in codes["panic"][1]
        assert failures == ["FakePanic: Onig: Regex search error: retry-limit-in-match over"]
        assert sched.failed == failures[0] and sched.snapshot()["failed"] == failures[0]
        with pytest.raises(Busy, match="engine failed"):
            sched.submit("d", (["x", "y"], [4], {}), lambda o: None)
    finally:
        sched.stop(1.0)


def _panicking_model(src, dst):
    """A copy of a tiny model whose tokenizer panics on a long run of 'a' (catastrophic
    backtracking in a look-ahead; oniguruma gives up and tokenizers panics)."""
    shutil.copytree(src, dst)
    path = dst / "tokenizer.json"
    tok = json.loads(path.read_text())
    tok["pre_tokenizer"]["pretokenizers"].insert(0, {
        "type": "Split", "pattern": {"Regex": "(?=(a+)+$)a"}, "behavior": "Isolated", "invert": False})
    path.write_text(json.dumps(tok))
    return dst


POISON = ["def f():\n    return '" + "a" * 40 + "!", "\n"]
GOOD = ["def add(a, b):\n    return ", "\n"]


def test_the_tokenizer_really_panics(tiny_dir, tmp_path):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(_panicking_model(tiny_dir, tmp_path / "m") / "tokenizer.json"))
    assert tok.encode(GOOD[0]).ids
    with pytest.raises(BaseException) as info:
        tok.encode(POISON[0])
    assert not isinstance(info.value, Exception) and type(info.value).__name__ == "PanicException"


@pytest.mark.slow  # two core starts
async def test_a_tokenizer_panic_is_answered_and_the_standby_takes_over(tiny_dir, tmp_path):
    model = _panicking_model(tiny_dir, tmp_path / "m")
    events = []
    client = CoreClient(model_dir=str(model), device="cpu", start_timeout=T, backoff=(0.1, 1.0),
                        core_args=["--threads", "1"], on_event=lambda kind, message: events.append((kind, message)))
    try:
        await client.start()
        first = await client.fill(GOOD, [4], {})
        live = (await client.status())["pid"]
        for _ in range(int(T / 0.05)):  # the standby started after that fill
            sb = client._standby
            if sb is not None and sb.conn is not None:
                break
            await asyncio.sleep(0.05)
        standby = client._standby.proc.pid
        with pytest.raises(CoreRequestError) as info:  # answered at once, not after the 60 s deadline
            await asyncio.wait_for(client.fill(POISON, [4], {}), 20)
        assert info.value.code == protocol.E_ENGINE_FAILED and "PanicException" in info.value.message
        again = await asyncio.wait_for(client.fill(GOOD, [4], {}), T)
        assert again["texts"] == first["texts"]
        assert (await client.status())["pid"] == standby != live
        assert client.state is CoreState.READY and [kind for kind, _ in events] == ["died", "restarted"]
        for _ in range(200):
            try:
                os.kill(live, 0)
            except ProcessLookupError:
                break
            await asyncio.sleep(0.05)
    finally:
        await client.close()
