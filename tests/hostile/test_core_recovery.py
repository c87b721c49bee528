"""kill -9 of the private core (issue 17 item 4, recovery <= 2 s to the next good
completion): the next completion must not wait for a whole core start (import torch,
tokenizer, model). The client keeps a standby core, started after the live one answered
a fill and warmed up (service --warm-up); when the live core dies the standby takes
over, answers the same texts, and another standby is started after the next fill.
Asserted by pids, not timings (evaluation/bench_hostile.py --only recovery times it)."""
from __future__ import annotations

import asyncio
import os
import signal

import pytest

from lsp_server.core_client import CoreClient, CoreState

T = 60.0
FILL = (["def add(a, b):\n    return ", "\n"], [6], {})


async def _standby_ready(client: CoreClient, not_pid: int | None = None) -> int:
    """The pid of the client's standby core once it has said hello (bounded wait)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + T
    while True:
        sb = client._standby
        if sb is not None and sb.conn is not None and not sb.conn.lost and sb.proc.pid != not_pid:
            return sb.proc.pid
        assert loop.time() < end, "no standby core came up"
        await asyncio.sleep(0.05)


async def _seen(events: list) -> None:
    """Until the client has noticed the death: a request sent before that is answered empty."""
    for _ in range(int(T / 0.01)):
        if events:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the client did not notice the core's death")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is not alive
        return f.read().split(") ")[-1][0] != "Z"


async def _gone(pid: int) -> bool:
    for _ in range(int(T / 0.05)):
        if not _alive(pid):
            return True
        await asyncio.sleep(0.05)
    return False


async def test_standby_takes_over_after_kill_9(tiny_dir):
    events = []
    client = CoreClient(model_dir=str(tiny_dir), device="cpu", start_timeout=T, backoff=(0.1, 1.0),
                        core_args=["--threads", "1"], on_event=lambda kind, message: events.append(kind))
    try:
        await client.start()
        assert client._standby is None  # none before the first answered fill
        first = await client.fill(*FILL)
        live = (await client.status())["pid"]
        live_dir = client._private_dir
        standby = await _standby_ready(client)
        assert standby != live

        os.kill(live, signal.SIGKILL)
        await _seen(events)
        again = await asyncio.wait_for(client.fill(*FILL), T)
        assert again["texts"] == first["texts"]  # the warm-up left no trace in the outputs
        assert (await client.status())["pid"] == standby  # taken over, not started afresh
        assert events == ["died", "restarted"] and client.restarts == 1 and client.state is CoreState.READY
        assert client.endpoint.endswith(os.path.join(client._private_dir, "core.sock"))
        for _ in range(100):  # the dead core's folder is removed
            if not os.path.exists(live_dir):
                break
            await asyncio.sleep(0.05)
        assert not os.path.exists(live_dir)

        replacement = await _standby_ready(client, not_pid=standby)  # armed again by that fill
        assert replacement not in (live, standby)
    finally:
        await client.close()
    assert await _gone(standby) and await _gone(replacement)
    assert not os.path.exists(client._private_dir or "/nonexistent")


@pytest.mark.slow  # three core starts and a fourth (~20 s on a busy 2-core CPU)
async def test_a_lost_standby_is_replaced_and_without_one_the_core_restarts(tiny_dir):
    client = CoreClient(model_dir=str(tiny_dir), device="cpu", start_timeout=T, backoff=(0.1, 1.0),
                        core_args=["--threads", "1"])
    try:
        await client.start()
        first = await client.fill(*FILL)
        live = (await client.status())["pid"]
        standby = await _standby_ready(client)
        os.kill(standby, signal.SIGKILL)  # the standby dies: the live core is untouched
        assert await _gone(standby)
        for _ in range(int(T / 0.01)):  # the client notices; the next answered fill starts another
            if client._standby is None:
                break
            await asyncio.sleep(0.01)
        assert (await client.fill(*FILL))["texts"] == first["texts"]
        assert (await client.status())["pid"] == live
        second = await _standby_ready(client, not_pid=standby)  # started after that fill
        assert second != live
    finally:
        await client.close()
    assert await _gone(second)

    events = []
    plain = CoreClient(model_dir=str(tiny_dir), device="cpu", start_timeout=T, backoff=(0.1, 1.0),
                       core_args=["--threads", "1"], standby=False, on_event=lambda kind, message: events.append(kind))
    try:
        await plain.start()
        assert (await plain.fill(*FILL))["texts"] == first["texts"]
        pid = (await plain.status())["pid"]
        await asyncio.sleep(0.5)
        assert plain._standby is None and plain._standby_start is None
        os.kill(pid, signal.SIGKILL)
        await _seen(events)
        assert (await asyncio.wait_for(plain.fill(*FILL), T))["texts"] == first["texts"]
        assert (await plain.status())["pid"] not in (pid, live)
    finally:
        await plain.close()


def test_meta_build_skips_initialisers_and_loads_the_same_network(tiny_dir):
    """A core (re)start builds the network with only torch.empty on the meta device and no
    initialisers run (loader.meta_model: 4.8 s -> 0.05 s on the loaded CPU for the default
    model); what loads is the network the plain meta-device build gives."""
    import torch

    from diffusion_core.network.config import ModelConfig
    from diffusion_core.loading.loader import assign_weights, load_model, meta_model
    from diffusion_core.network.model import Transformer
    from diffusion_core.loading.weights import read_tensors, weight_files

    originals = {name: getattr(torch.nn.init, name) for name in ("uniform_", "normal_", "kaiming_uniform_")}
    cfg = ModelConfig.load(tiny_dir / "config.json")
    built = meta_model(cfg)
    assert {name: getattr(torch.nn.init, name) for name in originals} == originals  # the patch is undone
    big = {n for n, p in built.named_parameters() if p.dim() == 2}
    assert big and all(built.get_parameter(n).is_meta for n in big)

    with torch.device("meta"):  # the reference: the build as it was
        reference = Transformer(cfg)
    assign_weights(reference, read_tensors(weight_files(tiny_dir)), str(tiny_dir), torch.device("cpu"), torch.float32)
    loaded = load_model(tiny_dir, "cpu", torch.float32).model
    ids = torch.arange(1, 12).unsqueeze(0)
    assert not any(p.is_meta for p in loaded.parameters()) and not loaded.inv_freq.is_meta
    assert torch.equal(loaded.inv_freq, reference.inv_freq)
    assert {k: v.shape for k, v in loaded.state_dict().items()} == {k: v.shape for k, v in reference.state_dict().items()}
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in loaded.state_dict().items())
    pos = torch.arange(ids.shape[1]).unsqueeze(0)
    with torch.no_grad():
        assert torch.equal(loaded(ids, pos, None), reference(ids, pos, None))
