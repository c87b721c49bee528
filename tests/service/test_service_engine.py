"""The service on the real engine and a tiny random model: scheduler batching against
engine.fill (the reference), and a private core subprocess that is killed with -9
mid-request and restarted."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

import pytest
import torch

from diffusion_core import protocol
from diffusion_core.generation.engine import Engine, FillParams, HoleSpec
from diffusion_core.serving.scheduler import SchedulerConfig
from diffusion_core.serving.service import CoreServer, EngineBackend, ServiceConfig
from evaluation.tiny_model import make_tiny_model
from lsp_server.core_client import CoreClient, CoreRequestError, CoreUnavailable

T = 60.0
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(protocol.__file__)))  # the checkout

REQUESTS = [
    (["def add(a, b):\n    return ", "\n\nprint(add(1, 2))\n"], [8], {}),
    (["class Point:\n    def __init__(self, x, y):\n        ", "\n"], [12], {"strategy": "topk", "steps": 6}),
    (["fn main() { let x = ", "; println!(\"{}\", x); }\n"], [5], {"threshold": 0.5}),
    (["int main(void) { ", " return ", "; }\n"], [4, 3], {}),
    (["import os\n", ""], [16], {"block_size": 4}),
    (["", " = 1\n"], [2], {"temperature": 0.8, "seed": 3}),
]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return str(make_tiny_model(tmp_path_factory.mktemp("tiny-model")))


@pytest.fixture(scope="module")
def engine(tiny_model):
    # One thread: on this shared 2-core machine torch's spinning threads cost 10-100x.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield Engine.load(tiny_model, device="cpu")
    torch.set_num_threads(threads)


@pytest.mark.parametrize("batched", [True, False])
async def test_scheduled_fills_match_engine_fill(tmp_path, engine, batched):
    reference = [engine.fill(s, [HoleSpec(b) for b in budgets], FillParams.from_dict(p)).texts
                 for s, budgets, p in REQUESTS]
    server = CoreServer(EngineBackend(engine), ServiceConfig(scheduler=SchedulerConfig(batched=batched)))
    address = await server.start(protocol.Address("unix", path=str(tmp_path / "core.sock")))
    clients = [CoreClient(address=str(address)) for _ in REQUESTS]
    try:
        await asyncio.gather(*(c.start() for c in clients))
        replies = await asyncio.wait_for(asyncio.gather(
            *(c.fill(s, b, p, request_id=f"r{i}") for i, (c, (s, b, p)) in enumerate(zip(clients, REQUESTS)))), T)
        assert [r["texts"] for r in replies] == reference
        batches = [r["stats"]["batch"] for r in replies]
        assert (max(batches) > 1) == batched
        assert all(r["stats"]["forward_passes"] >= 1 for r in replies)
        with pytest.raises(CoreRequestError) as info:
            await clients[0].fill(["a", "b"], [4], {"strategy": "nonsense"})
        assert info.value.code == protocol.E_INVALID_PARAMS and "strategy" in info.value.message
        status = await clients[0].status()
        assert status["info"]["model_type"] == engine.info()["model_type"]
    finally:
        await asyncio.gather(*(c.close() for c in clients))
        await server.close()


async def test_private_core_survives_kill_9(tiny_model):
    events = []
    client = CoreClient(model_dir=tiny_model, device="cpu", on_event=lambda k, m: events.append((k, m)),
                        start_timeout=T, backoff=(0.1, 1.0), core_args=["--threads", "1"])
    try:
        await client.start()
        first = await client.fill(*REQUESTS[0])
        assert first["texts"] and isinstance(first["texts"][0], str)
        pid = (await client.status())["pid"]
        assert pid != os.getpid()
        other = CoreClient(address=client.endpoint)  # a second editor shares the private core
        await other.start()
        assert (await other.fill(*REQUESTS[0]))["texts"] == first["texts"]
        await other.close()

        # A long request (one token per step), killed while the core works on it.
        long = asyncio.create_task(client.fill(["x = ", "\n"], [128], {"strategy": "topk", "steps": 128}))
        while (await client.status())["scheduler"]["active"] == 0:
            await asyncio.sleep(0.01)
        assert not long.done()
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(CoreUnavailable):
            await asyncio.wait_for(long, T)  # an error, not a hang
        assert [k for k, _ in events] == ["died"]

        again = await asyncio.wait_for(client.fill(*REQUESTS[0]), T)  # waits for the restart
        assert again["texts"] == first["texts"]
        assert [k for k, _ in events] == ["died", "restarted"]
        assert (await client.status())["pid"] != pid
        assert client.restarts == 1
    finally:
        await client.close()
    with pytest.raises(CoreUnavailable):
        await client.fill(*REQUESTS[0])


async def test_private_core_start_failure_is_one_line(tmp_path):
    client = CoreClient(model_dir=str(tmp_path / "no-such-model"), device="cpu", start_timeout=T)
    with pytest.raises(CoreUnavailable) as info:
        await client.start()
    message = str(info.value)
    assert "exited with code 1" in message and "no-such-model" in message and "\n" not in message


async def test_documents_revisited_out_of_order(tmp_path, engine):
    """Editors typing in several documents, coming back to them out of order: each
    request extends an earlier context (reused from the engine's context store)."""
    server = CoreServer(EngineBackend(engine), ServiceConfig())
    address = await server.start(protocol.Address("unix", path=str(tmp_path / "core.sock")))
    client = CoreClient(address=str(address))
    try:
        await client.start()
        for doc, typed in [(0, 0), (1, 0), (2, 0), (1, 1), (0, 1), (2, 2), (1, 2), (3, 0), (4, 0), (0, 2)]:
            prefix = f"# doc {doc}\n" + "x = 1\n" * (3 * doc + 1) + "def f():\n    return " + "abc"[:typed]
            reply = await asyncio.wait_for(client.fill([prefix, "\n"], [4], {"steps": 4, "strategy": "topk"}), T)
            assert len(reply["texts"]) == 1
        assert server.scheduler.counters["failed"] == 0
    finally:
        await client.close()
        await server.close()


async def test_cancelled_start_leaves_no_core_behind(tiny_model):
    client = CoreClient(model_dir=tiny_model, device="cpu", start_timeout=T)
    task = asyncio.create_task(client.start())
    while client._proc is None:  # spawned, still importing torch / loading
        await asyncio.sleep(0.01)
    proc = client._proc
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.wait_for(proc.wait(), T) == -signal.SIGKILL
    await client.close()


@pytest.mark.slow  # several core starts (~15 s on a busy 2-core CPU)
async def test_private_core_restart_backs_off_until_it_can_start(tiny_model, tmp_path):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    events = []
    client = CoreClient(model_dir=str(model), device="cpu", on_event=lambda k, m: events.append(k),
                        start_timeout=T, backoff=(0.2, 0.4), core_args=["--threads", "1"])
    try:
        await client.start()
        pid = (await client.status())["pid"]
        shutil.move(str(model), str(tmp_path / "away"))  # restarts now fail: no model
        os.kill(pid, signal.SIGKILL)
        while "died" not in events:
            await asyncio.sleep(0.01)
        with pytest.raises(CoreUnavailable) as info:  # waits for the first attempt, then fails
            await asyncio.wait_for(client.fill(*REQUESTS[0]), T)
        assert "model" in str(info.value) and "\n" not in str(info.value)
        with pytest.raises(CoreUnavailable, match="restarting"):  # answered at once meanwhile
            await asyncio.wait_for(client.fill(*REQUESTS[0]), 1.0)
        shutil.move(str(tmp_path / "away"), str(model))
        for _ in range(int(T / 0.2)):  # a later attempt succeeds
            try:
                reply = await client.fill(*REQUESTS[0])
                break
            except CoreUnavailable:
                await asyncio.sleep(0.2)
        assert reply["texts"]
        assert events == ["died", "restarted"]
    finally:
        await client.close()


def test_private_core_exits_with_its_parent(tiny_model, tmp_path):
    """An editor killed with -9 cannot stop its private core: the core notices itself."""
    import subprocess
    import sys
    import time

    sock = tmp_path / "core.sock"
    parent = subprocess.Popen(
        ["sh", "-c", f'"{sys.executable}" -m diffusion_core.serving.service --socket {sock} --model {tiny_model} '
                     f'--device cpu --exit-with-parent --threads 1 2>/dev/null & echo $!; wait'],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": ROOT})
    core_pid = int(parent.stdout.readline())
    try:
        deadline = time.monotonic() + T
        while not sock.exists():
            assert time.monotonic() < deadline, "core did not start"
            time.sleep(0.05)
        parent.kill()  # SIGKILL: the core is orphaned
        parent.wait()
        while True:
            try:
                os.kill(core_pid, 0)
            except ProcessLookupError:
                break  # gone (reaped by init)
            with open(f"/proc/{core_pid}/stat") as f:
                if f.read().split()[2] == "Z":
                    break  # exited, waiting to be reaped
            assert time.monotonic() < deadline, "orphaned core kept running"
            time.sleep(0.1)
        assert not sock.exists()  # it shut down cleanly, removing its socket
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(core_pid, signal.SIGKILL)


async def test_stop_rules_travel_with_the_fill(tmp_path, engine):
    """Per-hole stops reach the engine as HoleSpec fields; a fill without them still works."""
    segs, budgets = ["def f():\n    x = 1\n", "\n"], [24, ]
    stops = [{"max_lines": 1, "dedent_below": 4}]
    params = {"strategy": "topk", "steps": 0}
    ref = engine.fill(segs, [HoleSpec(24, max_lines=1, dedent_below=4)], FillParams.from_dict(params)).texts
    free = engine.fill(segs, [HoleSpec(24)], FillParams.from_dict(params)).texts
    server = CoreServer(EngineBackend(engine), ServiceConfig())
    address = await server.start(protocol.Address("unix", path=str(tmp_path / "core.sock")))
    client = CoreClient(address=str(address))
    try:
        await client.start()
        assert (await asyncio.wait_for(client.fill(segs, budgets, params, stops=stops), T))["texts"] == ref
        assert (await asyncio.wait_for(client.fill(segs, budgets, params), T))["texts"] == free
        with pytest.raises(CoreRequestError) as info:
            await client.fill(segs, budgets, params, stops=[{"max_lines": "1"}])
        assert info.value.code == protocol.E_BAD_REQUEST and "stops" in info.value.message
    finally:
        await client.close()
        await server.close()


async def test_a_warm_up_over_the_wire_is_reused_by_the_fill_and_changes_nothing(tmp_path, engine):
    """warm encodes the context at idle priority; the fill that follows reuses all of it
    and answers exactly what a cold engine.fill answers (the reference)."""
    prefix = "".join(f"def f{i}(a):\n    return a + {i}\n\n" for i in range(20)) + "def g(x):\n    return "
    segments, holes = [prefix, "\n"], [HoleSpec(budget=6, max_lines=1)]
    engine.forget_contexts()
    ref = engine.fill(segments, holes, FillParams(strategy="topk", steps=6))
    engine.forget_contexts()
    engine.encode_step_tokens = 32  # several chunks, each a heartbeat's worth of progress
    server = CoreServer(EngineBackend(engine), ServiceConfig())
    address = await server.start(protocol.Address("unix", path=str(tmp_path / "core.sock")))
    client = CoreClient(address=str(address))
    try:
        await client.start()
        warmed = await asyncio.wait_for(client.warm(segments, 6, {"strategy": "topk", "steps": 6}), T)
        assert warmed["texts"] == [] and warmed["stats"]["context_tokens"] > 32
        reply = await asyncio.wait_for(client.fill(segments, [6], {"strategy": "topk", "steps": 6},
                                                   stops=[{"max_lines": 1}]), T)
        assert reply["texts"] == ref.texts
        assert reply["stats"]["reused_tokens"] == reply["stats"]["context_tokens"]
        assert server.scheduler.counters["warm_submitted"] == 1
    finally:
        await client.close()
        await server.close()
        engine.forget_contexts()
        engine.encode_step_tokens = 256
