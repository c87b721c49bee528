"""Signals and exits (issue 24 item 3, issue 22 item 9): Ctrl-C stops `diffill fill` within a
step in one line with 130 (asyncio.run's own SIGINT handler used to wait for the whole
synchronous fill, then print a traceback); `diffill lsp` and `diffill core` shut down
cleanly on SIGINT/SIGTERM (the private core stopped, its folder removed); the handlers are
installed before any work (a signal during the load is one line too); `exit` without
`shutdown` exits 1, as the LSP spec says."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from diffusion_core.serving import service
from tests.hostile.raw_lsp import ROOT, frame

T = 60.0
ENV = dict(os.environ, PYTHONPATH=str(ROOT))


def wait_for_text(stream, needle: bytes, timeout: float = T) -> bytes:
    """Read a pipe byte by byte until ``needle`` shows (bounded)."""
    seen, deadline = b"", time.monotonic() + timeout
    fd = stream.fileno()
    os.set_blocking(fd, False)
    while needle not in seen:
        assert time.monotonic() < deadline, f"never saw {needle!r} in {seen[-300:]!r}"
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            time.sleep(0.01)
            continue
        assert chunk, f"the stream ended before {needle!r}: {seen[-300:]!r}"
        seen += chunk
    return seen


def finish(proc: subprocess.Popen, already: bytes = b"") -> tuple[int, float, str]:
    t0 = time.monotonic()
    proc.wait(T)
    took = time.monotonic() - t0
    rest = b""
    os.set_blocking(proc.stderr.fileno(), True)
    rest = proc.stderr.read()
    return proc.returncode, took, (already + rest).decode("utf-8", "replace")


# ---------------------------------------------------------------- diffill fill


@pytest.fixture(scope="module")
def long_fill(tmp_path_factory):
    """A file whose fill takes the tiny model tens of seconds (30 holes of 1024 tokens)."""
    path = tmp_path_factory.mktemp("fill") / "big.py"
    path.write_text("".join(f"def f{i}(x):\n    <|fill|>\n\n" for i in range(30)))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_fill_stops_within_a_step_on_a_signal(tiny_dir, long_fill, sig):
    proc = subprocess.Popen([sys.executable, "-m", "diffill", "fill", str(long_fill), "--model", str(tiny_dir),
                             "--max-tokens", "1024"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    seen = wait_for_text(proc.stderr, b"diffill fill: filling")  # a second into the fill
    proc.send_signal(sig)
    code, took, err = finish(proc, seen)
    out = proc.stdout.read()
    assert code == 128 + sig, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert err.strip().splitlines()[-1] == f"diffill fill: interrupted ({sig.name}); nothing was written"
    assert out == b""
    assert took < 10, f"{took:.1f} s after the signal"  # a step of this fill is ~0.6 s; it ran 28 s


def test_fill_interrupted_while_loading_says_one_line(tiny_dir, long_fill):
    """The handler is there before any work: a Ctrl-C during the imports and the load."""
    for delay in (0.3, 1.0):  # the imports, the load (not the interpreter's own ~50 ms of start-up)
        # A terminal's SIGINT disposition (a background job of a script inherits it ignored).
        proc = subprocess.Popen([sys.executable, "-m", "diffill", "fill", str(long_fill), "--model", str(tiny_dir)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        code, _, err = finish(proc)
        assert code == 130 and "Traceback" not in err, (delay, err)
        assert err.strip().splitlines()[-1] in (
            "diffill fill: interrupted (SIGINT); nothing was written", "diffill: interrupted (SIGINT)"), err


# ---------------------------------------------------------------- diffill core


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_core_shuts_down_cleanly_while_serving(tiny_dir, tmp_path, sig):
    sock = tmp_path / "core.sock"
    proc = subprocess.Popen([sys.executable, "-m", "diffill", "core", "--socket", str(sock), "--model", str(tiny_dir),
                             "--device", "cpu", "--threads", "1", "--log-level", "INFO"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
    seen = wait_for_text(proc.stderr, b"listening on")
    proc.send_signal(sig)
    code, took, err = finish(proc, seen)
    assert code == 0 and "Traceback" not in err, err
    assert f"{sig.name}: shutting down" in err and "diffill core stopped" in err
    assert not sock.exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_core_stopped_while_loading_says_one_line(tiny_dir, tmp_path, sig):
    proc = subprocess.Popen([sys.executable, "-m", "diffill", "core", "--socket", str(tmp_path / "core.sock"),
                             "--model", str(tiny_dir), "--device", "cpu", "--log-level", "INFO"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**ENV, service.LOAD_DELAY_ENV: "120"})
    seen = wait_for_text(proc.stderr, b"loading the model")
    proc.send_signal(sig)
    code, took, err = finish(proc, seen)
    assert code == 128 + sig and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == f"diffill core: stopped before serving ({sig.name})"
    assert took < 10


# ---------------------------------------------------------------- diffill lsp


def lsp(tmp_path: Path) -> subprocess.Popen:
    env = dict(ENV, XDG_RUNTIME_DIR=str(tmp_path), XDG_STATE_HOME=str(tmp_path / "state"))
    return subprocess.Popen([sys.executable, "-m", "diffill", "lsp", "--log-level", "WARNING"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def send(proc, obj) -> None:
    proc.stdin.write(frame({"jsonrpc": "2.0", **obj}))
    proc.stdin.flush()


def read_message(proc, want_id, timeout: float = T) -> dict:
    """The reply with id ``want_id`` from the server's stdout (other messages skipped)."""
    buf, fd, deadline = b"", proc.stdout.fileno(), time.monotonic() + timeout
    while True:
        while (end := buf.find(b"\r\n\r\n")) >= 0:
            n = int(next(h for h in buf[:end].split(b"\r\n") if h.lower().startswith(b"content-length")).split(b":")[1])
            if len(buf) < end + 4 + n:
                break
            message, buf = json.loads(buf[end + 4:end + 4 + n]), buf[end + 4 + n:]
            if message.get("id") == want_id and "method" not in message:
                return message
        assert time.monotonic() < deadline, "no reply"
        buf += os.read(fd, 1 << 16)


@pytest.mark.parametrize("shutdown, code", [(False, 1), (True, 0)])
def test_lsp_exit_code_follows_the_spec(tmp_path, shutdown, code):
    proc = lsp(tmp_path)
    try:
        send(proc, {"id": 1, "method": "initialize", "params": {"capabilities": {}, "processId": None}})
        read_message(proc, 1)
        if shutdown:
            send(proc, {"id": 2, "method": "shutdown"})
            read_message(proc, 2)
        send(proc, {"method": "exit"})
        assert proc.wait(T) == code
    finally:
        proc.kill()


@pytest.mark.slow  # a private core start
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_lsp_stops_its_private_core_on_a_signal(tiny_dir, tmp_path, sig):
    proc = lsp(tmp_path)
    try:
        send(proc, {"id": 1, "method": "initialize", "params": {
            "capabilities": {}, "processId": None,
            "initializationOptions": {"model": {"path": str(tiny_dir), "device": "cpu"}, "core": {"standby": False}}}})
        read_message(proc, 1)
        send(proc, {"method": "initialized", "params": {}})
        deadline, core = time.monotonic() + T, None
        while core is None:
            assert time.monotonic() < deadline, "the private core did not start"
            send(proc, {"id": 9, "method": "diffill/status", "params": {}})
            core = read_message(proc, 9)["result"]["core"].get("pid")
            time.sleep(0.1)
        folders = [p for p in (tmp_path / "diffill").iterdir() if p.name.startswith("core-")]
        assert len(folders) == 1
        proc.send_signal(sig)
        assert proc.wait(T) == 0
        err = proc.stderr.read().decode()
        assert "Traceback" not in err and f"{sig.name}: shutting down" in err, err
        with open(f"/proc/{core}/stat") if os.path.exists(f"/proc/{core}") else open(os.devnull) as f:
            assert f.read().rsplit(") ", 1)[-1][:1] in ("", "Z")  # stopped by the server, not orphaned
        assert not any(p.name.startswith("core-") for p in (tmp_path / "diffill").iterdir())
    finally:
        proc.kill()
