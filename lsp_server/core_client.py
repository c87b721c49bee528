"""Asyncio client of the denoising core, as the LSP server uses it.

Owns: connecting to a core (``unix:/path`` or ``tcp:host:port``) or starting a private
one as a subprocess, the hello handshake, request ids and their futures, cancellation
forwarding, and crash recovery (a private core that dies is replaced by its standby, or
restarted with backoff when there is none; an external one is reconnected on the next
request).

Must not know: torch, the engine, LSP types. From ``diffusion_core`` it imports only
``protocol`` (standard library + msgpack), so the editor process stays light.

Never a hang: every in-flight request fails with CoreUnavailable as soon as the
connection drops, and waiting for a restarting core is bounded by ``start_timeout``.
No deadline on work: a fill takes as long as the core needs while its heartbeats come
(protocol docstring); it fails as hung only when the core sends nothing for
``hung_after`` seconds or its engine makes no progress for ``stall_after`` (a stopped or
wedged core), so a slow first encode on a busy CPU is never cut off. A core without
heartbeats (an older shared one) keeps the old per-fill deadline, ``fill_timeout``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import importlib.util
import inspect
import logging
import os
import shutil
import socket
import stat
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable

from diffusion_core import protocol

log = logging.getLogger("diffill.core_client")

CLIENT_NAME = "diffill-lsp"

# Events passed to on_event(kind, message): once per death, once per recovery.
EVENT_DIED = "died"
EVENT_RESTARTED = "restarted"
# A private core's load progress (protocol.LOAD_PROGRESS_PREFIX lines on its stderr), each
# time it changes: "converting ...: 41% (1,002/2,441 MB)"; the server shows it as $/progress.
EVENT_PROGRESS = "progress"

# A core start fails after start_timeout seconds without load progress from the core (a
# first conversion of the default model takes 60-130 s on a 2-core CPU and reports every
# second; a second editor's core waits for it and reports its progress), and after
# MAX_START_S in all.
MAX_START_S = 3600.0

# Private cores live in <runtime dir>/core-XXXX/core.sock. A folder older than this whose
# socket is dead is a leftover of a server killed with its core, and is swept.
PRIVATE_DIR_PREFIX = "core-"
PRIVATE_SOCKET = "core.sock"
STALE_DIR_AGE_S = 600.0

# A private core that dies is replaced by its standby: a second private core, started once
# the live one has answered a fill, loaded and warmed up (service --warm-up), waiting
# connected and idle. Restarting instead puts a whole start between a crash and the next
# completion: 4.5 s to ready for the 0.5B default on the 2-core CPU at load ~3, import
# torch alone 3.0 s there and 1.3 s idle (evaluation/bench_core_start.py); taking over is a
# swap of connections (kill -9 to the next one-token completion: 6.5 s median without,
# 1.46 s with, of which 1.35 s the fill itself; evaluation/bench_hostile.py). Its price is its
# private memory only: the weights are the model cache's files, memory-mapped and never
# written, so both cores share one copy in the page cache (RssAnon of a warmed standby
# 230-290 MB; each core's RssFile 1.98 GB is the same pages).
STANDBY_ARGS = ("--warm-up",)


class CoreUnavailable(Exception):
    """The core cannot be reached (not started, died, refused the handshake); one line."""


class CoreRequestError(Exception):
    """The core answered a request with an error; ``code`` is one of protocol's E_* codes."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class CoreState(enum.Enum):
    IDLE = "idle"  # not started
    STARTING = "starting"
    READY = "ready"
    # Connected, but a fill or status passed its deadline (a stopped or wedged core); the
    # next answer in time makes it READY again.
    UNRESPONSIVE = "unresponsive"
    RESTARTING = "restarting"  # lost; a private core is being restarted / an external one reconnected on demand
    CLOSED = "closed"


@dataclass
class _Standby:
    """A private core started ahead of need (see STANDBY_ARGS); conn is set once it said hello."""

    proc: asyncio.subprocess.Process
    private_dir: str
    stderr_tail: collections.deque
    conn: _Connection | None = None
    info: dict | None = None


class _Connection:
    """One socket to a core: writes frames, routes replies to futures by id."""

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


class CoreClient:
    """See docs/architecture.md, "Core client contract"."""

    def __init__(
        self,
        address: str | None = None,
        model_dir: str | None = None,
        device: str = "auto",
        token: str | None = None,
        weights: str = "auto",
        on_event: Callable[[str, str], Any] | None = None,
        *,
        core_args: list[str] | tuple[str, ...] = (),
        start_timeout: float = 120.0,
        connect_timeout: float = 5.0,
        backoff: tuple[float, float] = (0.5, 10.0),
        fill_timeout: float = 60.0,
        status_timeout: float = 5.0,
        hung_after: float = 20.0,
        stall_after: float = 120.0,
        threads: int = 0,
        standby: bool = True,
    ):
        self.address = protocol.parse_address(address) if address else None
        self.model_dir = model_dir
        self.device = device
        self.weights = weights  # a private core's --weights (protocol.WEIGHTS_SCHEMES)
        # Blank is no token (a whitespace-only setting or $DIFFILL_CORE_TOKEN is not sent).
        self.token = (token if token is not None else os.environ.get(protocol.TOKEN_ENV, "")).strip() or None
        self.on_event = on_event
        self.core_args = list(core_args)
        self.start_timeout = start_timeout
        self.connect_timeout = connect_timeout
        self.backoff = backoff
        self.fill_timeout = fill_timeout  # only for cores without heartbeats (see the module docstring)
        # A core with heartbeats is hung when it sends nothing for hung_after s (a progress
        # frame comes every protocol.HEARTBEAT_S while a fill is in flight), or its engine
        # reports no finished step or chunk for stall_after s: one chunk of context costs
        # ~1-2 s on the 2-core CPU with the default model, ~15 s at load 8.
        self.hung_after = hung_after
        self.stall_after = stall_after
        self.threads = threads  # a private core's --threads (0: chosen by measurement, diffusion_core.threads)
        self.status_timeout = status_timeout
        self.standby = standby  # keep a standby private core (STANDBY_ARGS); ignored for external cores
        self.state = CoreState.IDLE
        self.server_info: dict = {}
        self.restarts = 0
        self._conn: _Connection | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._private_dir: str | None = None
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=20)
        self._ready = asyncio.Event()
        self._recover: asyncio.Task | None = None
        self._restart_error = ""  # why the last restart attempt failed; "" when none did
        self._reconnect_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task] = set()
        self._standby: _Standby | None = None
        self._standby_start: asyncio.Task | None = None
        self._want_standby = False  # start one after the next answered fill
        self._progress_seen: dict[int, tuple[int, str]] = {}  # pid -> its last load progress (done, what)
        self._progress_at: dict[int, float] = {}  # pid -> when that last changed (monotonic)

    @property
    def private(self) -> bool:
        return self.address is None

    @property
    def endpoint(self) -> str:
        """The address this client talks to (a private core's socket too), e.g. to share it."""
        return str(self.address) if self.address else f"unix:{self._socket_path()}"

    # ------------------------------------------------------------ public API

    async def start(self) -> None:
        """Connect (starting a private core first if no address) and shake hands."""
        if self.state in (CoreState.READY, CoreState.UNRESPONSIVE):
            return
        if self.state is CoreState.CLOSED:
            raise CoreUnavailable("the core client is closed")
        if self.state in (CoreState.STARTING, CoreState.RESTARTING):  # someone else is on it
            await self._ready_connection()
            return
        self.state = CoreState.STARTING
        try:
            await self._within_start_deadline(self._open(), lambda: self._proc)
        except asyncio.TimeoutError:
            await self._stop_process()
            self._start_failed(f"core did not answer within {self.start_timeout:.0f} s (and reported no load progress)")
            raise CoreUnavailable(self._restart_error) from None
        except CoreUnavailable as exc:
            await self._stop_process()
            self._start_failed(str(exc))
            raise
        except asyncio.CancelledError:  # the caller gave up: leave no orphan core behind
            self._kill_now()
            self._start_failed("core start cancelled")
            raise

    def _start_failed(self, reason: str) -> None:
        """Back to IDLE, and wake requests that were waiting for this start."""
        if self.state is not CoreState.CLOSED:
            self.state = CoreState.IDLE
        self._restart_error = reason
        self._ready.set()
        self._ready.clear()

    async def fill(self, segments: list[str], budgets: list[int], params: dict,
                   request_id: str | None = None, stops: list[dict] | None = None,
                   on_progress: Callable[[dict], None] | None = None) -> dict:
        """{"texts": [...], "stats": {...}}; cancelling the awaiting task cancels it in the core.

        stops: one map per hole of protocol.STOP_KEYS (max_lines, dedent_below), or None.
        on_progress(progress): each heartbeat of the fill (protocol docstring)."""
        body = {"segments": list(segments), "budgets": list(budgets), "params": dict(params or {})}
        if request_id is not None:
            body["request_id"] = request_id
        if stops is not None:
            body["stops"] = [dict(s) for s in stops]
        conn = await self._ready_connection()
        result = await self._call_by(conn, protocol.FILL, body, self.fill_timeout, on_progress)
        self._maybe_start_standby()
        return result

    async def warm(self, segments: list[str], budget: int, params: dict, request_id: str | None = None) -> dict:
        """Have the core encode a one-hole fill's context at idle priority, for the fill
        that follows (a real fill preempts it, and takes over its encode); {} from a core
        that has no warm-ups. Cancelling the awaiting task cancels it in the core."""
        conn = await self._ready_connection()
        if not conn.heartbeat_s:  # an older core: no warm method
            return {}
        body = {"segments": list(segments), "budgets": [int(budget)], "params": dict(params or {})}
        if request_id is not None:
            body["request_id"] = request_id
        return await self._call_by(conn, protocol.WARM, body, self.fill_timeout)

    async def status(self) -> dict:
        conn = await self._ready_connection()
        return await self._call_by(conn, protocol.STATUS, {}, self.status_timeout)

    async def _call_by(self, conn: _Connection, method: str, params: dict, timeout: float,
                       on_progress: Callable[[dict], None] | None = None) -> dict:
        """A call that fails when the core is hung: a fill or warm on a core with
        heartbeats while they keep coming (``_watched``), anything else within ``timeout``.
        A hung call is cancelled in the core, the caller gets CoreUnavailable (an empty
        answer) and the core is reported UNRESPONSIVE."""
        try:
            if method in (protocol.FILL, protocol.WARM) and conn.heartbeat_s:
                result = await self._watched(conn, method, params, on_progress)
            else:
                result = await asyncio.wait_for(conn.call(method, params, on_progress), timeout)
        except CoreRequestError as exc:
            if exc.code == protocol.E_ENGINE_FAILED and not conn.lost:
                # The core's engine thread died and the core is exiting: stop using it now,
                # so the next request goes to the standby (or a restart), not to a core
                # that refuses every fill until it is gone.
                log.warning("the core's engine failed: %s; switching cores", exc.message)
                conn.writer.transport.abort()
            raise
        except asyncio.TimeoutError as exc:
            why = str(exc) or f"the core did not answer {method} within {timeout:.0f} s (stopped or overloaded)"
            if self.state is CoreState.READY and self._conn is conn:
                self.state = CoreState.UNRESPONSIVE
                log.warning("%s; reporting it unresponsive", why)
            raise CoreUnavailable(why) from None
        if self.state is CoreState.UNRESPONSIVE and self._conn is conn:
            self.state = CoreState.READY
        return result

    async def _watched(self, conn: _Connection, method: str, params: dict,
                       on_progress: Callable[[dict], None] | None) -> dict:
        """conn.call with the request's heartbeats asked for, as long as they say the core
        is alive and its engine moving (see __init__: hung_after, stall_after)."""
        seen: dict = {}

        def progress(p: dict) -> None:
            seen.update(p)
            if on_progress is not None:
                on_progress(p)

        call = asyncio.ensure_future(conn.call(method, {**params, "progress": True}, progress))
        try:
            while True:
                done, _ = await asyncio.wait({call}, timeout=min(1.0, self.hung_after / 4))
                if done:
                    return call.result()
                silent = time.monotonic() - conn.last_frame
                if silent > self.hung_after:
                    # Our own loop may have been the one blocked (a huge document parsed on
                    # it): let the read loop take what arrived meanwhile before judging.
                    for _ in range(3):
                        await asyncio.sleep(0.02)
                    silent = time.monotonic() - conn.last_frame
                stalled = float(seen.get("engine_idle_s") or 0.0)
                if call.done():
                    return call.result()
                if silent > self.hung_after:
                    why = f"the core sent nothing for {silent:.0f} s during {method} (stopped or wedged)"
                elif stalled > self.stall_after:
                    why = f"the core's engine made no progress for {stalled:.0f} s during {method} (wedged)"
                else:
                    continue
                call.cancel()  # tells the core to drop it (conn.call)
                with contextlib.suppress(BaseException):
                    await call
                raise asyncio.TimeoutError(why)
        except asyncio.CancelledError:
            call.cancel()
            raise

    async def close(self) -> None:
        """Stop using the core; a private core is shut down and its directory removed."""
        if self.state is CoreState.CLOSED:
            return
        self.state = CoreState.CLOSED
        if self._recover is not None:
            self._recover.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._recover
        if self._standby_start is not None:
            self._standby_start.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._standby_start
        standby, self._standby = self._standby, None
        if standby is not None:
            await self._discard(standby)
        conn, self._conn = self._conn, None
        self._ready.set()  # requests waiting for a restart see the client closed
        if conn is not None and not conn.lost and self.private:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.call(protocol.SHUTDOWN, {}), 2.0)
        if conn is not None:
            conn.fail_pending("the core client is closed")
        await self._stop_process()
        for task in list(self._tasks):
            task.cancel()
        if self._private_dir:
            shutil.rmtree(self._private_dir, ignore_errors=True)
            self._private_dir = None

    # ------------------------------------------------------------ connecting

    async def _open(self) -> None:
        if self.private:
            await self._spawn()
            if self.state is CoreState.CLOSED:
                self._kill_now()
                raise CoreUnavailable("the core client is closed")
        conn = await self._connect()
        hello = await self._handshake(conn)
        if self.state is CoreState.CLOSED:  # close() ran while we were connecting
            conn.fail_pending("the core client is closed")
            self._kill_now()
            raise CoreUnavailable("the core client is closed")
        self.server_info = hello.get("info", {}) if isinstance(hello.get("info"), dict) else {}
        self._restart_error = ""
        self._conn = conn
        self.state = CoreState.READY
        self._ready.set()
        self._want_standby = self.standby and self.private and self._standby is None

    async def _handshake(self, conn: _Connection) -> dict:
        """hello on a fresh connection; CoreUnavailable (and the connection failed) if refused."""
        try:
            hello = await asyncio.wait_for(conn.call(protocol.HELLO, {
                "version": protocol.PROTOCOL_VERSION, "token": self.token, "client": CLIENT_NAME,
            }), self.connect_timeout)
            beat = hello.get("heartbeat_s")
            conn.heartbeat_s = float(beat) if isinstance(beat, (int, float)) and not isinstance(beat, bool) and beat > 0 else 0.0
            return hello
        except CoreRequestError as exc:
            conn.fail_pending("handshake refused")
            raise CoreUnavailable(f"core refused the handshake: {exc}") from None
        except asyncio.TimeoutError:
            conn.fail_pending("handshake timed out")
            raise CoreUnavailable("core did not answer hello") from None

    async def _connect(self, address: protocol.Address | None = None,
                       standby: _Standby | None = None) -> _Connection:
        """Open the socket; a private core (the live one, or `standby`) is polled until it
        listens or exits."""
        address = address or self.address or protocol.Address("unix", path=self._socket_path())
        while True:
            try:
                if address.kind == "unix":
                    reader, writer = await asyncio.open_unix_connection(address.path, limit=protocol.MAX_FRAME_BYTES)
                else:
                    reader, writer = await asyncio.wait_for(
                        asyncio.open_connection(address.host, address.port, limit=protocol.MAX_FRAME_BYTES),
                        self.connect_timeout)
                break
            except (OSError, asyncio.TimeoutError) as exc:
                if not self.private:
                    raise CoreUnavailable(f"cannot reach the core at {address}: {exc}") from None
                proc = standby.proc if standby is not None else self._proc
                if proc is None or proc.returncode is not None:
                    raise CoreUnavailable(self._exit_message(standby)) from None
                await asyncio.sleep(0.05)
        if address.kind == "unix":  # before a byte of code: the listener must be ours
            proc = (standby.proc if standby is not None else self._proc) if self.private else None
            try:
                protocol.check_peer(writer.get_extra_info("socket"), address.path, proc.pid if proc else None)
            except (ValueError, OSError) as exc:
                writer.close()
                log.error("%s", exc)
                raise CoreUnavailable(protocol.one_line(exc)) from None
        conn = _Connection(reader, writer)
        conn.task = self._spawn_task(self._watch(conn))
        return conn

    async def _watch(self, conn: _Connection) -> None:
        reason = await conn.read_loop()
        conn.fail_pending(f"core connection lost: {reason}")
        if self.state is CoreState.CLOSED:
            return
        standby = self._standby
        if standby is not None and standby.conn is conn:
            log.warning("the standby core was lost (%s); another starts after the next fill", reason)
            self._standby = None
            self._want_standby = self.standby
            self._spawn_task(self._discard(standby))
            return
        if self._conn is not conn:
            return
        self._conn = None
        self._ready.clear()
        self.state = CoreState.RESTARTING
        where = "private core" if self.private else f"core at {self.address}"
        log.warning("%s lost: %s", where, reason)
        self._emit(EVENT_DIED, f"diffill: the {where} stopped ({reason}); "
                               + ("restarting it" if self.private else "will reconnect on the next request"))
        if self.private:
            self._recover = self._spawn_task(self._restart_loop())

    async def _ready_connection(self) -> _Connection:
        if self.state is CoreState.CLOSED:
            raise CoreUnavailable("the core client is closed")
        if self.state is CoreState.IDLE:
            raise CoreUnavailable("the core client is not started")
        if self._conn is not None and not self._conn.lost:
            return self._conn
        if not self.private:  # external core: one reconnection attempt per request
            async with self._reconnect_lock:  # concurrent requests share one attempt
                if self._conn is not None and not self._conn.lost:
                    return self._conn
                if self.state is CoreState.CLOSED:
                    raise CoreUnavailable("the core client is closed")
                try:
                    await asyncio.wait_for(self._open(), self.connect_timeout * 2)
                except (CoreUnavailable, asyncio.TimeoutError) as exc:
                    raise CoreUnavailable(str(exc) or "core did not answer") from None
                self._emit(EVENT_RESTARTED, f"diffill: reconnected to the core at {self.address}")
                return self._conn
        if self._restart_error:  # the restart loop already failed: answer now, it keeps trying
            raise CoreUnavailable(f"the private core is down ({self._restart_error}); restarting it")
        try:
            await asyncio.wait_for(self._ready.wait(), self.start_timeout)
        except asyncio.TimeoutError:
            raise CoreUnavailable("the private core is restarting; try again shortly") from None
        if self._conn is None:
            if self.state is CoreState.CLOSED:
                raise CoreUnavailable("the core client is closed")
            if self.state is CoreState.IDLE:
                raise CoreUnavailable(f"the core failed to start: {self._restart_error}")
            raise CoreUnavailable(f"the private core is down ({self._restart_error}); restarting it")
        return self._conn

    async def _restart_loop(self) -> None:
        if await self._take_over():
            return
        delay, max_delay = self.backoff
        while self.state is CoreState.RESTARTING:
            await self._stop_process()
            try:
                await self._within_start_deadline(self._open(), lambda: self._proc)
            except (CoreUnavailable, asyncio.TimeoutError) as exc:
                self._restart_error = str(exc) or "no answer"
                self._ready.set()  # wake waiting requests: they fail with this reason
                self._ready.clear()
                log.warning("restarting the core failed: %s; next try in %.1f s", self._restart_error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, max_delay)
                continue
            self._restart_error = ""
            self.restarts += 1
            self._emit(EVENT_RESTARTED, "diffill: the private core was restarted")
            return

    # ------------------------------------------------------------ private core process

    def _socket_path(self) -> str:
        if self._private_dir is None:
            self._private_dir = _new_private_dir()
        return os.path.join(self._private_dir, PRIVATE_SOCKET)

    async def _spawn(self) -> None:
        # Warmed up like the standby (STANDBY_ARGS): the first fill of a newly opened file
        # must not also page in the weights and run each kernel for the first time (the
        # default model's first 197-token fill took 15.4 s against 0.9 s for the next, load 6).
        self._proc, self._stderr_tail = await self._launch(self._socket_path(), STANDBY_ARGS)

    async def _launch(self, socket_path: str, extra: tuple[str, ...] = ()) -> tuple[asyncio.subprocess.Process,
                                                                                     collections.deque]:
        """Start a private core on socket_path; returns it and the deque its stderr lines go to."""
        # --parent-pid: the core exits with us from its first instruction, also when we die
        # before its interpreter has started (service.main, lifeline.tie_to_parent).
        cmd = [sys.executable, "-m", "diffusion_core.service", "--socket", socket_path, "--device", self.device,
               "--weights", self.weights, "--threads", str(self.threads),
               "--parent-pid", str(os.getpid()), "--load-progress"]
        if self.model_dir:
            cmd += ["--model", str(self.model_dir)]
        cmd += [*self.core_args, *extra]
        env = dict(os.environ)
        root = _package_root()
        if root:
            env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        log.info("starting a private core: %s", " ".join(cmd))
        # stdout goes nowhere: the LSP stream is our own stdout and must stay clean.
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE, env=env)
        tail: collections.deque[str] = collections.deque(maxlen=20)
        self._spawn_task(self._pump_stderr(proc, tail))
        return proc, tail

    async def _pump_stderr(self, proc: asyncio.subprocess.Process, tail: collections.deque) -> None:
        assert proc.stderr is not None
        while line := await proc.stderr.readline():
            text = line.decode("utf-8", "replace").rstrip()
            if self._load_progress(proc, text):
                continue
            tail.append(text)
            log.debug("core: %s", text)

    def _load_progress(self, proc: asyncio.subprocess.Process, line: str) -> bool:
        """A load progress line of `proc`: when it changed, the start deadline runs from now,
        and the live core's is passed on (EVENT_PROGRESS). False for any other line."""
        parsed = protocol.parse_load_progress(line)
        if parsed is None:
            return False
        done, total, what = parsed
        if self._progress_seen.get(proc.pid) != (done, what):
            self._progress_seen[proc.pid] = (done, what)
            self._progress_at[proc.pid] = time.monotonic()
            if proc is self._proc:
                share = f": {100 * done // total}% ({done / 1e6:,.0f}/{total / 1e6:,.0f} MB)" if total > 0 else ""
                self._emit(EVENT_PROGRESS, f"{what}{share}")
        return True

    async def _within_start_deadline(self, aw: Any, proc_of: Callable[[], Any]) -> Any:
        """Await a core start: asyncio.TimeoutError once start_timeout has passed since it
        began or since the core's load progress last changed, whichever is later (MAX_START_S
        at most). A conversion in progress keeps the start alive; a silent core does not."""
        task = asyncio.ensure_future(aw)
        began = time.monotonic()
        try:
            while True:
                proc = proc_of()
                last = self._progress_at.get(proc.pid, 0.0) if proc is not None else 0.0
                until = min(max(began, last) + self.start_timeout, began + MAX_START_S)
                left = until - time.monotonic()
                if left <= 0:
                    raise asyncio.TimeoutError
                done, _ = await asyncio.wait({task}, timeout=left)
                if done:
                    return task.result()
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task

    def _exit_message(self, standby: _Standby | None = None) -> str:
        proc, tail = (standby.proc, standby.stderr_tail) if standby is not None else (self._proc, self._stderr_tail)
        code = proc.returncode if proc is not None else None
        last = next((line for line in reversed(tail) if line.strip()), "")
        what = "standby" if standby is not None else "private"
        return f"the {what} core exited with code {code}" + (f": {last}" if last else "")

    # ------------------------------------------------------------ the standby core

    def _maybe_start_standby(self) -> None:
        """After an answered fill: start the standby if this live core has none yet."""
        if not self._want_standby or self.state is not CoreState.READY:
            return
        self._want_standby = False
        self._standby_start = self._spawn_task(self._start_standby())

    async def _start_standby(self) -> None:
        folder = _new_private_dir()
        path = os.path.join(folder, PRIVATE_SOCKET)
        launch = asyncio.ensure_future(self._launch(path, STANDBY_ARGS))
        try:
            proc, tail = await asyncio.shield(launch)
        except OSError as exc:
            shutil.rmtree(folder, ignore_errors=True)
            log.warning("cannot start a standby core: %s", exc)
            return
        except asyncio.CancelledError:  # close() while spawning: leave no core or folder behind
            with contextlib.suppress(Exception):
                await _stop((await launch)[0])
            shutil.rmtree(folder, ignore_errors=True)
            raise
        standby = self._standby = _Standby(proc, folder, tail)
        try:
            conn = await self._within_start_deadline(self._connect(protocol.Address("unix", path=path), standby),
                                                     lambda: standby.proc)
            hello = await self._handshake(conn)
        except (CoreUnavailable, asyncio.TimeoutError) as exc:
            # Not retried until the live core is next replaced: a standby that cannot start
            # would otherwise be started again after every fill.
            log.warning("the standby core did not start: %s", exc or "no answer")
            if self._standby is standby:
                self._standby = None
            await self._discard(standby)
            return
        except asyncio.CancelledError:
            self._standby = None if self._standby is standby else self._standby
            await asyncio.shield(self._discard(standby))
            raise
        standby.conn = conn
        standby.info = hello.get("info", {}) if isinstance(hello.get("info"), dict) else {}
        if self._standby is not standby or self.state is CoreState.CLOSED:
            await self._discard(standby)
            return
        log.info("standby core ready (pid %d)", proc.pid)

    async def _take_over(self) -> bool:
        """The live core is lost: promote the standby (waiting for it if it is still starting).
        False when there is none to promote, and the core is started afresh."""
        starting = self._standby_start
        if starting is not None and not starting.done():
            await asyncio.wait({starting}, timeout=self.start_timeout)  # neither raises nor cancels it
        standby, self._standby = self._standby, None
        if standby is None:
            return False
        if (standby.conn is None or standby.conn.lost or standby.proc.returncode is not None
                or self.state is not CoreState.RESTARTING):
            await self._discard(standby)
            return False
        # The standby keeps its own folder, so its own cleanup at exit (service.serve removes
        # the folder of a private core) still matches; the endpoint changes with it.
        old_proc, self._proc, self._stderr_tail = self._proc, standby.proc, standby.stderr_tail
        old_dir, self._private_dir = self._private_dir, standby.private_dir
        self.server_info = standby.info or {}
        self._restart_error = ""
        self._conn = standby.conn
        self.state = CoreState.READY
        self._ready.set()
        self.restarts += 1
        self._want_standby = self.standby
        self._spawn_task(self._retire(old_proc, old_dir))
        self._emit(EVENT_RESTARTED, "diffill: the private core was replaced by its standby")
        return True

    @staticmethod
    async def _retire(proc: asyncio.subprocess.Process | None, folder: str | None) -> None:
        """The replaced core: stopped if it still runs (it lost us, not necessarily its life), its folder removed."""
        await _stop(proc)
        if folder:
            shutil.rmtree(folder, ignore_errors=True)

    async def _discard(self, standby: _Standby) -> None:
        if standby.conn is not None:
            standby.conn.fail_pending("standby discarded")
        await _stop(standby.proc)
        shutil.rmtree(standby.private_dir, ignore_errors=True)

    def _kill_now(self) -> None:
        """Kill the private core without waiting (asyncio's child watcher reaps it)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()

    async def _stop_process(self) -> None:
        proc, self._proc = self._proc, None
        await _stop(proc)

    # ------------------------------------------------------------ helpers

    def _emit(self, kind: str, message: str) -> None:
        if self.on_event is None:
            return
        try:
            outcome = self.on_event(kind, message)
            if inspect.isawaitable(outcome):
                self._spawn_task(outcome)
        except Exception:
            log.exception("on_event callback failed")

    def _spawn_task(self, coro: Any) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


async def _stop(proc: asyncio.subprocess.Process | None) -> None:
    """Terminate a core (SIGTERM: it shuts down cleanly), kill it if it lingers, reap it."""
    if proc is None or proc.returncode is not None:
        return
    for sig in (proc.terminate, proc.kill):
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                sig()
        try:
            await asyncio.wait_for(proc.wait(), 5.0)
            return
        except asyncio.TimeoutError:
            continue


def _new_private_dir() -> str:
    """A fresh 0700 folder for one private core's socket (old leftovers swept first)."""
    runtime = protocol.runtime_dir()
    sweep_stale_private_dirs(runtime)
    return tempfile.mkdtemp(prefix=PRIVATE_DIR_PREFIX, dir=runtime)  # mode 0700


def sweep_stale_private_dirs(runtime: str, min_age: float = STALE_DIR_AGE_S) -> list[str]:
    """Remove private core folders left by servers that died with their core (kill -9 of
    both): older than min_age, holding nothing but a socket nobody listens on. A folder
    whose core still runs, or one just made by a server that is starting, is kept."""
    removed = []
    now = time.time()
    try:
        names = os.listdir(runtime)
    except OSError:
        return removed
    for name in names:
        path = os.path.join(runtime, name)
        try:
            st = os.lstat(path)
            if (not name.startswith(PRIVATE_DIR_PREFIX) or not stat.S_ISDIR(st.st_mode)
                    or st.st_uid != os.getuid() or now - st.st_mtime < min_age):
                continue
            entries = os.listdir(path)
            if set(entries) - {PRIVATE_SOCKET}:
                continue
            sock = os.path.join(path, PRIVATE_SOCKET)
            if entries and _listening(sock):
                continue
            if entries:
                os.unlink(sock)
            os.rmdir(path)
            removed.append(path)
        except OSError:
            continue
    return removed


def _listening(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(0.5)
    try:
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()


def _package_root() -> str | None:
    """Folder holding the diffusion_core package, so ``python -m`` finds it uninstalled too."""
    spec = importlib.util.find_spec("diffusion_core")
    if spec is None or not spec.submodule_search_locations:
        return None
    return os.path.dirname(os.path.abspath(list(spec.submodule_search_locations)[0]))
