"""Faults around the core (issue 17 item 10, issue 25 item 3): a fill on a hung core (no
frame for hung_after, or an engine that made no progress for stall_after) is answered
(CoreUnavailable: an empty completion) and the core is reported unresponsive, not
"ready", while a slow fill whose heartbeats keep coming is never cut off; private core folders do not pile up when servers die; a token file or
--socket folder other users can touch is refused."""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from diffusion_core.serving import service
from lsp_server.core_client import CoreClient, CoreState, CoreUnavailable
from lsp_server.core_process import sweep_stale_private_dirs
from tests.service.service_fakes import FakeBackend
from tests.service.test_service_server import FILL, start_server


async def test_a_fill_on_a_wedged_engine_is_answered_and_the_core_reported_unresponsive(tmp_path):
    # The heartbeats keep coming from the core's event loop, but its engine has been in one
    # step for longer than stall_after: a wedged core, told apart from a busy one.
    server, address = await start_server(tmp_path, FakeBackend())
    client = CoreClient(address=str(address), stall_after=0.5, status_timeout=0.5)
    try:
        await client.start()
        with pytest.raises(CoreUnavailable, match="engine made no progress"):
            await client.fill(FILL["segments"], FILL["budgets"], {"steps": 1, "delay": 3.0})
        assert client.state is CoreState.UNRESPONSIVE
        await client.start()  # still connected: start() does not open a second connection
        for _ in range(20):  # the wedged step ends; the next answer in time makes it ready again
            try:
                assert (await client.fill(FILL["segments"], FILL["budgets"], {"steps": 1}))["texts"]
                break
            except CoreUnavailable:
                continue
        assert client.state is CoreState.READY
    finally:
        await client.close()
        await server.close()


async def test_a_core_that_sends_nothing_is_hung_and_a_slow_busy_one_is_not(tmp_path):
    server, address = await start_server(tmp_path, FakeBackend())
    client = CoreClient(address=str(address), hung_after=1.0, stall_after=1.5)
    seen: list[dict] = []
    try:
        await client.start()
        # Busy, not hung: 6 steps of 0.5 s, 3 s in all, three times hung_after, answered,
        # with progress frames on the way (each step ends within stall_after).
        reply = await client.fill(FILL["segments"], FILL["budgets"], {"steps": 6, "delay": 0.5},
                                  on_progress=seen.append)
        assert reply["texts"] and client.state is CoreState.READY
        assert len(seen) >= 2 and all("phase" in p and "engine_idle_s" in p for p in seen)
        # Silent: the core stops sending heartbeats (as a SIGSTOPped one does).
        server.heartbeat_s = 60.0
        await asyncio.sleep(1.1)  # the beat loop sleeps its current second out first
        with pytest.raises(CoreUnavailable, match="sent nothing"):
            await client.fill(FILL["segments"], FILL["budgets"], {"steps": 8, "delay": 0.5})
        assert client.state is CoreState.UNRESPONSIVE
    finally:
        await client.close()
        await server.close()


async def test_a_core_without_heartbeats_keeps_the_fill_deadline(tmp_path):
    server, address = await start_server(tmp_path, FakeBackend())
    client = CoreClient(address=str(address), fill_timeout=0.5)
    try:
        await client.start()
        client._conn.heartbeat_s = 0.0  # what the hello of an older core leaves
        with pytest.raises(CoreUnavailable, match="did not answer fill"):
            await client.fill(FILL["segments"], FILL["budgets"], {"steps": 1, "delay": 2.0})
    finally:
        await client.close()
        await server.close()


def test_token_file_other_users_can_read_is_refused(tmp_path, capsys):
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    token.chmod(0o644)
    assert service.main(["--listen", "127.0.0.1:0", "--token-file", str(token)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "0644" in err[0] and str(token) in err[0]


def test_socket_in_a_folder_others_can_write_is_refused(tmp_path, capsys):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    assert service.main(["--socket", str(shared / "core.sock")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "writable by other users" in err[0]


def _dead_socket(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()  # the file stays, nobody listens


def test_stale_private_folders_are_swept_live_and_young_ones_kept(tmp_path):
    old = time.time() - 3600
    for name in ("core-empty", "core-dead", "core-live", "core-young", "core-other"):
        (tmp_path / name).mkdir()
    _dead_socket(tmp_path / "core-dead" / "core.sock")
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    live.bind(str(tmp_path / "core-live" / "core.sock"))
    live.listen(1)
    (tmp_path / "core-other" / "notes.txt").write_text("not ours to delete")
    for name in ("core-empty", "core-dead", "core-live", "core-other"):
        os.utime(tmp_path / name, (old, old))
    try:
        removed = sweep_stale_private_dirs(str(tmp_path))
    finally:
        live.close()
    assert sorted(os.path.basename(p) for p in removed) == ["core-dead", "core-empty"]
    assert sorted(os.listdir(tmp_path)) == ["core-live", "core-other", "core-young"]


@pytest.mark.slow
def test_private_core_folder_goes_when_its_server_is_killed(tiny_dir, tmp_path):
    folder = tmp_path / "core-x"
    folder.mkdir(mode=0o700)
    sock = folder / "core.sock"
    # A stand-in for the LSP server: starts a private core, then dies by kill -9.
    parent = subprocess.Popen([sys.executable, "-c", (
        "import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-m', 'diffusion_core.serving.service', '--socket', {str(sock)!r}, "
        f"'--model', {str(tiny_dir)!r}, '--device', 'cpu', '--exit-with-parent', '--log-level', 'WARNING'])\n"
        "time.sleep(120)\n")])
    try:
        deadline = time.monotonic() + 60
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sock.exists()
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 20
        while folder.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not folder.exists()
    finally:
        if parent.poll() is None:
            parent.kill()


async def test_a_blocked_client_loop_does_not_make_a_live_core_look_hung(tmp_path):
    # The server's own event loop stalls (a 10 MB document parsed on it) longer than
    # hung_after while the core's heartbeats queue up in the socket: not a hung core.
    server, address = await start_server(tmp_path, FakeBackend())
    client = CoreClient(address=str(address), hung_after=1.0, stall_after=30.0)
    try:
        await client.start()
        fill = asyncio.ensure_future(client.fill(FILL["segments"], FILL["budgets"], {"steps": 10, "delay": 0.4}))
        await asyncio.sleep(1.2)  # the fill is running, heartbeats have come
        blocked_until = time.monotonic() + 1.6
        while time.monotonic() < blocked_until:  # block this loop: no frame is read meanwhile
            time.sleep(0.05)
        reply = await fill
        assert reply["texts"] and client.state is CoreState.READY
    finally:
        await client.close()
        await server.close()
