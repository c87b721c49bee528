"""The first run (issue 22 item 4): a core start that waits for a conversion in progress.

Two editors opening at once on a fresh cache both gave up at the 120 s start deadline,
killed their converting cores and left 2.4 GB each behind. Now a private core reports its
load's progress (protocol.LOAD_PROGRESS_PREFIX lines), the client waits as long as it
changes, and the editor sees it as $/progress. Real cores on a tiny random GGUF; the
"conversion in progress" is this test process holding the model's conversion lock and
reporting progress into it, as a converting core does.
"""
from __future__ import annotations

import asyncio
import sys
import threading
import time
from pathlib import Path

import pytest

from diffusion_core.loading import cache_folder
from lsp_server.core_client import EVENT_PROGRESS, CoreClient, CoreUnavailable

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "checkpoints"))
from gguf_fixtures import make_gguf  # noqa: E402

pytestmark = pytest.mark.slow
# Longer than a core takes to import torch and reach the lock on the loaded 2-core box.
START_TIMEOUT_S = 15.0


class _Found(Exception):
    pass


@pytest.fixture()
def fresh(tmp_path, monkeypatch):
    """(tiny GGUF, the cache folder its conversion writes) in a fresh cache and runtime dir."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))
    tiny = make_gguf(tmp_path / "tiny.gguf", seed=13)
    return tiny.path, _target(tiny.path, monkeypatch)


def _target(path: Path, monkeypatch) -> Path:
    """The folder a core's load of `path` converts into (as the core resolves it)."""
    from diffusion_core.loading.loader import load_model

    seen = []

    def spy(folder, progress=None):
        seen.append(folder)
        raise _Found

    with monkeypatch.context() as m:
        m.setattr(cache_folder, "acquire", spy)
        with pytest.raises(_Found):
            load_model(path, "cpu")
    return seen[0]


class Holder(threading.Thread):
    """Holds `folder`'s conversion lock for `hold_s`, reporting progress every 0.3 s while
    `advancing` (a stalled conversion reports the same progress)."""

    def __init__(self, folder: Path, hold_s: float, advancing: bool = True):
        super().__init__(daemon=True)
        self.lock = cache_folder.acquire(folder)
        self.hold_s, self.advancing = hold_s, advancing
        self.stop = threading.Event()

    def run(self) -> None:
        t0 = time.monotonic()
        step = 0
        self.lock.report(1, 1000, "converting layers.0.mlp.up_proj.weight")
        while time.monotonic() - t0 < self.hold_s and not self.stop.wait(0.3):
            if self.advancing:
                step += 1
                self.lock.report(min(step, 999), 1000, f"converting layers.{step}.mlp.up_proj.weight")
        self.lock.release()


async def test_a_conversion_in_progress_extends_the_start_deadline(fresh):
    path, folder = fresh
    holder = Holder(folder, START_TIMEOUT_S + 8)
    events: list[tuple[str, str]] = []
    client = CoreClient(model_dir=str(path), device="cpu", standby=False, start_timeout=START_TIMEOUT_S,
                        core_args=["--threads", "1"], on_event=lambda k, m: events.append((k, m)))
    holder.start()
    t0 = time.monotonic()
    try:
        await client.start()
        took = time.monotonic() - t0
        out = await client.fill(["def f():\n    return ", "\n"], [2], {})
    finally:
        holder.stop.set()
        await client.close()
    assert took > START_TIMEOUT_S, took  # it waited past the deadline because progress kept coming
    assert isinstance(out.get("texts"), list)
    waits = [m for k, m in events if k == EVENT_PROGRESS and m.startswith("waiting for pid")]
    assert waits and "converting layers." in waits[-1] and "%" in waits[-1], events[-5:]


async def test_a_stalled_conversion_still_ends_the_start(fresh):
    path, folder = fresh
    holder = Holder(folder, 120, advancing=False)
    client = CoreClient(model_dir=str(path), device="cpu", standby=False, start_timeout=START_TIMEOUT_S,
                        core_args=["--threads", "1"])
    holder.start()
    t0 = time.monotonic()
    try:
        with pytest.raises(CoreUnavailable, match="reported no load progress"):
            await client.start()
    finally:
        holder.stop.set()
        await client.close()
    assert time.monotonic() - t0 < START_TIMEOUT_S + 30  # not the holder's 120 s


async def test_two_editors_opening_at_once_convert_once(fresh):
    path, folder = fresh
    clients = [CoreClient(model_dir=str(path), device="cpu", standby=False, core_args=["--threads", "1"])
               for _ in range(2)]
    try:
        await asyncio.gather(*(c.start() for c in clients))
        outs = await asyncio.gather(*(c.fill(["def f():\n    return ", "\n"], [2], {}) for c in clients))
    finally:
        for c in clients:
            await c.close()
    assert all(isinstance(o.get("texts"), list) for o in outs)
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # one folder, no temporary left
    cache_folder.check(folder, full=True)


async def test_the_editor_sees_a_conversion_in_progress_as_progress(fresh, tmp_path):
    from lsprotocol import types

    from tests.lsp_server.lsp_session import REAL_SERVER, session, wait_ready

    path, folder = fresh
    holder = Holder(folder, 120)  # until the editor has seen the wait (below)
    holder.start()
    init = {"model": {"path": str(path), "device": "cpu"}, "core": {"standby": False}}

    def messages(client) -> list[str]:
        reports = [v for vs in client.progress_reports.values() for v in vs]
        return [r.message or "" for r in reports if isinstance(r, types.WorkDoneProgressReport)]

    try:
        async with session(REAL_SERVER, init=init, tmp=tmp_path) as client:
            t0 = time.monotonic()
            while not any(m.startswith("waiting for pid") for m in messages(client)) and time.monotonic() - t0 < 90:
                await asyncio.sleep(0.1)
            holder.stop.set()
            st = await wait_ready(client, timeout=90)
            seen = messages(client)
            last = [v for vs in client.progress_reports.values() for v in vs][-1]
    finally:
        holder.stop.set()
    assert st["core"]["state"] == "ready", st
    waits = [m for m in seen if m.startswith("waiting for pid")]
    assert waits and "converting layers." in waits[-1], seen
    assert isinstance(last, types.WorkDoneProgressEnd)
