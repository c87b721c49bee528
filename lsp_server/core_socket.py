"""One socket to a denoising core: frames, request ids and their futures.

Owns: opening ``unix:/path`` or ``tcp:host:port`` (a private core's socket is polled
until its process listens, and its listener checked to be ours), the hello handshake,
request ids routed to futures, the core's progress frames routed to listeners,
cancellation forwarding, failing every in-flight request when the stream ends, and
telling a hung call from a slow one by the core's heartbeats.

Must not know: processes (``core_process``), restarts and states (``core_client``),
torch, LSP types. From ``diffusion_core`` it imports only ``protocol``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, Callable

from diffusion_core import protocol

log = logging.getLogger("diffill.core_client")

CLIENT_NAME = "diffill-lsp"


class CoreUnavailable(Exception):
    """The core cannot be reached (not started, died, refused the handshake); one line."""


class CoreRequestError(Exception):
    """The core answered a request with an error; ``code`` is one of protocol's E_* codes."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class CoreSocket:
    """One connection to a core: writes frames, routes replies to futures by id."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer
        self.pending: dict[int, asyncio.Future] = {}
        self.listeners: dict[int, Callable[[dict], None]] = {}  # progress frames by request id
        self.last_frame = time.monotonic()  # when the core last sent anything
        self.heartbeat_s = 0.0  # from hello: the core sends progress frames (0: an older core)
        self.lost = False
        self._next_id = 0
        self.task: asyncio.Task | None = None

    def next_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def send_nowait(self, message: dict) -> None:
        if not self.lost and not self.writer.is_closing():
            self.writer.write(protocol.encode(message))

    async def call(self, method: str, params: dict, on_progress: Callable[[dict], None] | None = None) -> dict:
        if self.lost:
            raise CoreUnavailable("core connection lost")
        msg_id = self.next_id()
        future = asyncio.get_running_loop().create_future()
        self.pending[msg_id] = future
        if on_progress is not None:
            self.listeners[msg_id] = on_progress
        try:
            self.writer.write(protocol.encode(protocol.request(msg_id, method, params)))
            await self.writer.drain()
            return await future
        except protocol.ProtocolError as exc:
            raise CoreRequestError(exc.code, str(exc)) from None
        except (ConnectionError, OSError) as exc:
            raise CoreUnavailable(f"core connection lost: {exc}") from None
        except asyncio.CancelledError:
            if method in (protocol.FILL, protocol.WARM):
                with contextlib.suppress(Exception):
                    self.send_nowait(protocol.request(self.next_id(), protocol.CANCEL, {"id": msg_id}))
            raise
        finally:
            self.pending.pop(msg_id, None)
            self.listeners.pop(msg_id, None)

    async def watched(self, method: str, params: dict, on_progress: Callable[[dict], None] | None,
                      hung_after: float, stall_after: float) -> dict:
        """``call`` with the request's heartbeats asked for, as long as they say the core is
        alive (a frame within ``hung_after`` s) and its engine moving (``engine_idle_s`` under
        ``stall_after``); asyncio.TimeoutError with the reason, the call cancelled in the
        core, when they do not."""
        seen: dict = {}

        def progress(p: dict) -> None:
            seen.update(p)
            if on_progress is not None:
                on_progress(p)

        call = asyncio.ensure_future(self.call(method, {**params, "progress": True}, progress))
        try:
            while True:
                done, _ = await asyncio.wait({call}, timeout=min(1.0, hung_after / 4))
                if done:
                    return call.result()
                silent = time.monotonic() - self.last_frame
                if silent > hung_after:
                    # Our own loop may have been the one blocked (a huge document parsed on
                    # it): let the read loop take what arrived meanwhile before judging.
                    for _ in range(3):
                        await asyncio.sleep(0.02)
                    silent = time.monotonic() - self.last_frame
                stalled = float(seen.get("engine_idle_s") or 0.0)
                if call.done():
                    return call.result()
                if silent > hung_after:
                    why = f"the core sent nothing for {silent:.0f} s during {method} (stopped or wedged)"
                elif stalled > stall_after:
                    why = f"the core's engine made no progress for {stalled:.0f} s during {method} (wedged)"
                else:
                    continue
                call.cancel()  # tells the core to drop it (call)
                with contextlib.suppress(BaseException):
                    await call
                raise asyncio.TimeoutError(why)
        except asyncio.CancelledError:
            call.cancel()
            raise

    async def hello(self, token: str | None, timeout: float) -> dict:
        """The handshake on a fresh connection; CoreUnavailable (and the connection failed) if refused."""
        try:
            hello = await asyncio.wait_for(self.call(protocol.HELLO, {
                "version": protocol.PROTOCOL_VERSION, "token": token, "client": CLIENT_NAME,
            }), timeout)
        except CoreRequestError as exc:
            self.fail_pending("handshake refused")
            raise CoreUnavailable(f"core refused the handshake: {exc}") from None
        except asyncio.TimeoutError:
            self.fail_pending("handshake timed out")
            raise CoreUnavailable("core did not answer hello") from None
        beat = hello.get("heartbeat_s")
        self.heartbeat_s = float(beat) if isinstance(beat, (int, float)) and not isinstance(beat, bool) and beat > 0 else 0.0
        return hello

    async def read_loop(self) -> str:
        """Route replies until the stream ends; returns why it ended."""
        try:
            while True:
                message = await protocol.read_message(self.reader)
                if message is None:
                    return "the core closed the connection"
                self.last_frame = time.monotonic()
                if "progress" in message and "result" not in message and "error" not in message:
                    listener = self.listeners.get(message.get("id"))
                    if listener is not None and isinstance(message["progress"], dict):
                        try:
                            listener(message["progress"])
                        except Exception:  # a broken listener must not end the read loop
                            log.exception("progress listener failed")
                    continue
                future = self.pending.get(message.get("id"))
                if future is None or future.done():
                    if "error" in message and message.get("id") is None:
                        log.warning("core error: %s", message["error"])
                    continue
                if "error" in message:
                    err = message["error"] if isinstance(message["error"], dict) else {}
                    future.set_exception(CoreRequestError(str(err.get("code", protocol.E_INTERNAL)),
                                                          str(err.get("message", ""))))
                else:
                    result = message.get("result")
                    future.set_result(result if isinstance(result, dict) else {})
        except protocol.ProtocolError as exc:
            return f"bad frame from the core: {exc}"
        except (asyncio.IncompleteReadError, ConnectionError, OSError) as exc:
            return f"connection dropped ({type(exc).__name__})"
        finally:
            self.lost = True

    def fail_pending(self, reason: str) -> None:
        self.lost = True
        for future in self.pending.values():
            if not future.done():
                future.set_exception(CoreUnavailable(reason))
        self.pending.clear()
        self.writer.close()


async def open_socket(address: protocol.Address, connect_timeout: float, proc: Any = None,
                      exit_message: Callable[[], str] = str) -> CoreSocket:
    """Open the socket. ``proc``: the private core process that is to listen there, polled
    until it does (CoreUnavailable with ``exit_message()`` once it has exited); None: an
    external core, tried once. A unix socket's listener is checked to be ours first."""
    while True:
        try:
            if address.kind == "unix":
                reader, writer = await asyncio.open_unix_connection(address.path, limit=protocol.MAX_FRAME_BYTES)
            else:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(address.host, address.port, limit=protocol.MAX_FRAME_BYTES),
                    connect_timeout)
            break
        except (OSError, asyncio.TimeoutError) as exc:
            if proc is None:
                raise CoreUnavailable(f"cannot reach the core at {address}: {exc}") from None
            if proc.returncode is not None:
                raise CoreUnavailable(exit_message()) from None
            await asyncio.sleep(0.05)
    if address.kind == "unix":  # before a byte of code: the listener must be ours
        try:
            protocol.check_peer(writer.get_extra_info("socket"), address.path, proc.pid if proc is not None else None)
        except (ValueError, OSError) as exc:
            writer.close()
            log.error("%s", exc)
            raise CoreUnavailable(protocol.one_line(exc)) from None
    return CoreSocket(reader, writer)
