"""Asyncio client of the denoising core, as the LSP server uses it.

Owns: connecting to a core (``unix:/path`` or ``tcp:host:port``) or starting a private
one as a subprocess, the hello handshake, request ids and their futures, cancellation
forwarding, and crash recovery (a private core that dies is restarted with backoff; an
external one is reconnected on the next request).

Must not know: torch, the engine, LSP types. From ``diffusion_core`` it imports only
``protocol`` (standard library + msgpack), so the editor process stays light.

Never a hang: every in-flight request fails with CoreUnavailable as soon as the
connection drops, and waiting for a restarting core is bounded by ``start_timeout``.
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
from typing import Any, Callable

from diffusion_core import protocol

log = logging.getLogger("diffill.core_client")

CLIENT_NAME = "diffill-lsp"

# Events passed to on_event(kind, message): once per death, once per recovery.
EVENT_DIED = "died"
EVENT_RESTARTED = "restarted"

# Private cores live in <runtime dir>/core-XXXX/core.sock. A folder older than this whose
# socket is dead is a leftover of a server killed with its core, and is swept.
PRIVATE_DIR_PREFIX = "core-"
PRIVATE_SOCKET = "core.sock"
STALE_DIR_AGE_S = 600.0


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


class _Connection:
    """One socket to a core: writes frames, routes replies to futures by id."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer
        self.pending: dict[int, asyncio.Future] = {}
        self.lost = False
        self._next_id = 0
        self.task: asyncio.Task | None = None

    def next_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def send_nowait(self, message: dict) -> None:
        if not self.lost and not self.writer.is_closing():
            self.writer.write(protocol.encode(message))

    async def call(self, method: str, params: dict) -> dict:
        if self.lost:
            raise CoreUnavailable("core connection lost")
        msg_id = self.next_id()
        future = asyncio.get_running_loop().create_future()
        self.pending[msg_id] = future
        try:
            self.writer.write(protocol.encode(protocol.request(msg_id, method, params)))
            await self.writer.drain()
            return await future
        except protocol.ProtocolError as exc:
            raise CoreRequestError(exc.code, str(exc)) from None
        except (ConnectionError, OSError) as exc:
            raise CoreUnavailable(f"core connection lost: {exc}") from None
        except asyncio.CancelledError:
            if method == protocol.FILL:
                with contextlib.suppress(Exception):
                    self.send_nowait(protocol.request(self.next_id(), protocol.CANCEL, {"id": msg_id}))
            raise
        finally:
            self.pending.pop(msg_id, None)

    async def read_loop(self) -> str:
        """Route replies until the stream ends; returns why it ended."""
        try:
            while True:
                message = await protocol.read_message(self.reader)
                if message is None:
                    return "the core closed the connection"
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
        on_event: Callable[[str, str], Any] | None = None,
        *,
        core_args: list[str] | tuple[str, ...] = (),
        start_timeout: float = 120.0,
        connect_timeout: float = 5.0,
        backoff: tuple[float, float] = (0.5, 10.0),
        fill_timeout: float = 60.0,
        status_timeout: float = 5.0,
    ):
        self.address = protocol.parse_address(address) if address else None
        self.model_dir = model_dir
        self.device = device
        self.token = token if token is not None else os.environ.get(protocol.TOKEN_ENV) or None
        self.on_event = on_event
        self.core_args = list(core_args)
        self.start_timeout = start_timeout
        self.connect_timeout = connect_timeout
        self.backoff = backoff
        self.fill_timeout = fill_timeout
        self.status_timeout = status_timeout
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
            await asyncio.wait_for(self._open(), self.start_timeout)
        except asyncio.TimeoutError:
            await self._stop_process()
            self._start_failed(f"core did not answer within {self.start_timeout:.0f} s")
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
                   request_id: str | None = None, stops: list[dict] | None = None) -> dict:
        """{"texts": [...], "stats": {...}}; cancelling the awaiting task cancels it in the core.

        stops: one map per hole of protocol.STOP_KEYS (max_lines, dedent_below), or None."""
        body = {"segments": list(segments), "budgets": list(budgets), "params": dict(params or {})}
        if request_id is not None:
            body["request_id"] = request_id
        if stops is not None:
            body["stops"] = [dict(s) for s in stops]
        conn = await self._ready_connection()
        return await self._call_by(conn, protocol.FILL, body, self.fill_timeout)

    async def status(self) -> dict:
        conn = await self._ready_connection()
        return await self._call_by(conn, protocol.STATUS, {}, self.status_timeout)

    async def _call_by(self, conn: _Connection, method: str, params: dict, timeout: float) -> dict:
        """A call with a deadline: past it the request is cancelled in the core, the caller
        gets CoreUnavailable (an empty answer) and the core is reported UNRESPONSIVE."""
        try:
            result = await asyncio.wait_for(conn.call(method, params), timeout)
        except asyncio.TimeoutError:
            if self.state is CoreState.READY and self._conn is conn:
                self.state = CoreState.UNRESPONSIVE
                log.warning("the core did not answer %s within %.0f s; reporting it unresponsive", method, timeout)
            raise CoreUnavailable(f"the core did not answer {method} within {timeout:.0f} s "
                                  "(stopped or overloaded)") from None
        if self.state is CoreState.UNRESPONSIVE and self._conn is conn:
            self.state = CoreState.READY
        return result

    async def close(self) -> None:
        """Stop using the core; a private core is shut down and its directory removed."""
        if self.state is CoreState.CLOSED:
            return
        self.state = CoreState.CLOSED
        if self._recover is not None:
            self._recover.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._recover
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
        try:
            hello = await asyncio.wait_for(conn.call(protocol.HELLO, {
                "version": protocol.PROTOCOL_VERSION, "token": self.token, "client": CLIENT_NAME,
            }), self.connect_timeout)
        except CoreRequestError as exc:
            conn.fail_pending("handshake refused")
            raise CoreUnavailable(f"core refused the handshake: {exc}") from None
        except asyncio.TimeoutError:
            conn.fail_pending("handshake timed out")
            raise CoreUnavailable("core did not answer hello") from None
        if self.state is CoreState.CLOSED:  # close() ran while we were connecting
            conn.fail_pending("the core client is closed")
            self._kill_now()
            raise CoreUnavailable("the core client is closed")
        self.server_info = hello.get("info", {}) if isinstance(hello.get("info"), dict) else {}
        self._restart_error = ""
        self._conn = conn
        self.state = CoreState.READY
        self._ready.set()

    async def _connect(self) -> _Connection:
        """Open the socket; a private core is polled until it listens or exits."""
        address = self.address or protocol.Address("unix", path=self._socket_path())
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
                if self._proc is None or self._proc.returncode is not None:
                    raise CoreUnavailable(self._exit_message()) from None
                await asyncio.sleep(0.05)
        conn = _Connection(reader, writer)
        conn.task = self._spawn_task(self._watch(conn))
        return conn

    async def _watch(self, conn: _Connection) -> None:
        reason = await conn.read_loop()
        conn.fail_pending(f"core connection lost: {reason}")
        if self._conn is not conn or self.state is CoreState.CLOSED:
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
        delay, max_delay = self.backoff
        while self.state is CoreState.RESTARTING:
            await self._stop_process()
            try:
                await asyncio.wait_for(self._open(), self.start_timeout)
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
            runtime = protocol.runtime_dir()
            sweep_stale_private_dirs(runtime)
            self._private_dir = tempfile.mkdtemp(prefix=PRIVATE_DIR_PREFIX, dir=runtime)  # mode 0700
        return os.path.join(self._private_dir, PRIVATE_SOCKET)

    async def _spawn(self) -> None:
        cmd = [sys.executable, "-m", "diffusion_core.service", "--socket", self._socket_path(), "--device", self.device,
               "--exit-with-parent"]
        if self.model_dir:
            cmd += ["--model", str(self.model_dir)]
        cmd += self.core_args
        env = dict(os.environ)
        root = _package_root()
        if root:
            env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        log.info("starting a private core: %s", " ".join(cmd))
        # stdout goes nowhere: the LSP stream is our own stdout and must stay clean.
        self._proc = await asyncio.create_subprocess_exec(
            *cmd, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE, env=env)
        self._stderr_tail.clear()
        self._spawn_task(self._pump_stderr(self._proc))

    async def _pump_stderr(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        while line := await proc.stderr.readline():
            text = line.decode("utf-8", "replace").rstrip()
            self._stderr_tail.append(text)
            log.debug("core: %s", text)

    def _exit_message(self) -> str:
        code = self._proc.returncode if self._proc is not None else None
        last = next((line for line in reversed(self._stderr_tail) if line.strip()), "")
        return f"the private core exited with code {code}" + (f": {last}" if last else "")

    def _kill_now(self) -> None:
        """Kill the private core without waiting (asyncio's child watcher reaps it)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()

    async def _stop_process(self) -> None:
        proc, self._proc = self._proc, None
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
