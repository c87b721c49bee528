"""A bare LSP client over pipes for tests that must misbehave (pytest-lsp cannot send a
lying Content-Length): starts the real server on the fake core (tests/lsp_server/fakes.py)."""
from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FAKE_SERVER = [sys.executable, str(ROOT / "tests" / "lsp_server" / "fakes.py")]


def frame(obj: dict) -> bytes:
    body = json.dumps(obj).encode()
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


class RawLsp:
    def __init__(self, tmp: Path, fake: dict | None = None):
        env = dict(os.environ, PYTHONPATH=str(ROOT), XDG_RUNTIME_DIR=str(tmp), XDG_STATE_HOME=str(tmp / "state"),
                   DIFFILL_FAKE_CORE=json.dumps(fake or {}))
        self.proc = subprocess.Popen(FAKE_SERVER, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, env=env)
        self.buf = b""
        self.inbox: list[dict] = []

    def send_raw(self, data: bytes) -> None:
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def send(self, obj: dict) -> None:
        self.send_raw(frame(obj))

    def request(self, msg_id, method: str, params=None, omit_params: bool = False) -> None:
        msg = {"jsonrpc": "2.0", "id": msg_id, "method": method}
        if not omit_params:
            msg["params"] = params
        self.send(msg)

    def _pump(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return False
        data = os.read(self.proc.stdout.fileno(), 1 << 16)
        if not data:
            raise EOFError("the server closed its stdout")
        self.buf += data
        while (end := self.buf.find(b"\r\n\r\n")) >= 0:
            header = self.buf[:end].decode()
            n = int(next(h for h in header.split("\r\n") if h.lower().startswith("content-length")).split(":")[1])
            if len(self.buf) < end + 4 + n:
                break
            self.inbox.append(json.loads(self.buf[end + 4:end + 4 + n]))
            self.buf = self.buf[end + 4 + n:]
        return True

    def wait_for(self, pred, timeout: float = 20.0) -> dict | None:
        deadline = time.monotonic() + timeout
        while True:
            for m in self.inbox:
                if pred(m):
                    self.inbox.remove(m)
                    return m
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self._pump(min(left, 0.2))

    def response(self, msg_id, timeout: float = 20.0) -> dict | None:
        return self.wait_for(lambda m: m.get("id") == msg_id and "method" not in m, timeout)

    def initialize(self) -> dict:
        self.request(0, "initialize", {"capabilities": {}, "processId": None, "rootUri": None})
        reply = self.response(0)
        self.send({"jsonrpc": "2.0", "method": "initialized", "params": {}})
        return reply

    def alive(self, msg_id) -> bool:
        """The server still answers a request after whatever came before."""
        self.request(msg_id, "diffill/status", {})
        reply = self.response(msg_id)
        return reply is not None and "result" in reply

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
