"""The core as the language server sees it: one lifecycle over a socket and a process.

Owns: ``CoreState`` (the one state machine between the LSP and its core), and
``CoreClient``, the facade that implements ``core_link.CoreConnection`` on a real core:
start (a private core spawned, or a shared one reached at ``unix:/path`` /
``tcp:host:port``), fill / warm / status / close, the state moves, and crash recovery (a
private core that dies is replaced by its standby, or restarted with backoff when there
is none; an external one is reconnected on the next request). The socket is
``core_socket``; the processes are ``core_process``.

Must not know: torch, the engine, LSP types. From ``diffusion_core`` it imports only
``protocol`` (standard library + msgpack), so the editor process stays light.

Never a hang: every in-flight request fails with CoreUnavailable as soon as the
connection drops, and waiting for a core that is coming up follows the one wait rule
(``core_process.start_deadline``). No deadline on work: a fill takes as long as the core
needs while its heartbeats come (protocol docstring); it fails as hung only when the core
sends nothing for ``hung_after`` seconds or its engine makes no progress for
``stall_after`` (a stopped or wedged core), so a slow first encode on a busy CPU is never
cut off. A core without heartbeats (an older shared one) keeps the old per-fill deadline,
``fill_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import inspect
import logging
import os
from typing import Any, Callable

from diffusion_core import protocol
from lsp_server.core_process import START_TIMEOUT_S, CoreCommand, Standby, Supervisor
from lsp_server.core_socket import CoreRequestError, CoreSocket, CoreUnavailable, open_socket

__all__ = ["CoreClient", "CoreRequestError", "CoreState", "CoreUnavailable",
           "EVENT_DIED", "EVENT_PROGRESS", "EVENT_RESTARTED"]

log = logging.getLogger("diffill.core_client")

# Events passed to on_event(kind, message): once per death, once per recovery.
EVENT_DIED = "died"
EVENT_RESTARTED = "restarted"
# A private core's load progress (protocol.LOAD_PROGRESS_PREFIX lines on its stderr), each
# time it changes: "converting ...: 41% (1,002/2,441 MB)"; the server shows it as $/progress.
EVENT_PROGRESS = "progress"


class CoreState(enum.Enum):
    """Where a core stands; ``diffill/status`` shows the value.

    IDLE -> STARTING -> READY | FAILED; READY <-> UNRESPONSIVE (a call past its deadline,
    then an answer in time); READY -> RESTARTING (lost) -> READY; FAILED -> STARTING (the
    next start); any -> CLOSED."""

    IDLE = "idle"  # not started
    STARTING = "starting"
    READY = "ready"
    # Connected, but a fill or status passed its deadline (a stopped or wedged core); the
    # next answer in time makes it READY again.
    UNRESPONSIVE = "unresponsive"
    RESTARTING = "restarting"  # lost; a private core is being restarted / an external one reconnected on demand
    FAILED = "failed"  # the last start failed (the reason is kept); the next start tries again
    CLOSED = "closed"


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
        start_timeout: float = START_TIMEOUT_S,
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
        # Blank is no token (a whitespace-only setting or $DIFFILL_CORE_TOKEN is not sent).
        self.token = (token if token is not None else os.environ.get(protocol.TOKEN_ENV, "")).strip() or None
        self.on_event = on_event
        self.start_timeout = start_timeout
        self.connect_timeout = connect_timeout
        self.backoff = backoff
        self.fill_timeout = fill_timeout  # only for cores without heartbeats (see the module docstring)
        # A core with heartbeats is hung when it sends nothing for hung_after s (a progress
        # frame comes every protocol.HEARTBEAT_S while a fill is in flight), or its engine
        # reports no finished step or chunk for stall_after s; one chunk of context is
        # seconds on a loaded CPU (docs/benchmarks.md, "Hung, not slow").
        self.hung_after = hung_after
        self.stall_after = stall_after
        self.status_timeout = status_timeout
        self.standby = standby  # keep a standby private core (core_process.STANDBY_ARGS); ignored for external cores
        self.state = CoreState.IDLE
        self.server_info: dict = {}
        self.restarts = 0
        self._conn: CoreSocket | None = None
        self._tasks: set[asyncio.Task] = set()
        self.supervisor = Supervisor(CoreCommand(model_dir, device, weights, threads, list(core_args)),
                                     start_timeout, lambda line: self._emit(EVENT_PROGRESS, line), self._spawn_task)
        self._ready = asyncio.Event()
        self._recover: asyncio.Task | None = None
        self._restart_error = ""  # why the last start or restart attempt failed; "" when none did
        self._reconnect_lock = asyncio.Lock()
        self._want_standby = False  # start one after the next answered fill

    @property
    def private(self) -> bool:
        return self.address is None

    @property
    def endpoint(self) -> str:
        """The address this client talks to (a private core's socket too), e.g. to share it."""
        return str(self.address) if self.address else f"unix:{self.supervisor.socket_path()}"

    # The supervisor's view, as the recovery tests and bench_hostile read it.
    @property
    def _proc(self) -> asyncio.subprocess.Process | None:
        return self.supervisor.proc

    @property
    def _private_dir(self) -> str | None:
        return self.supervisor.private_dir

    @property
    def _standby(self) -> Standby | None:
        return self.supervisor.standby

    @property
    def _standby_start(self) -> asyncio.Task | None:
        return self.supervisor.standby_start

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
            await self.supervisor.within_start_deadline(self._open())
        except asyncio.TimeoutError:
            await self.supervisor.stop_live()
            self._start_failed(f"core did not answer within {self.start_timeout:.0f} s (and reported no load progress)")
            raise CoreUnavailable(self._restart_error) from None
        except CoreUnavailable as exc:
            await self.supervisor.stop_live()
            self._start_failed(str(exc))
            raise
        except asyncio.CancelledError:  # the caller gave up: leave no orphan core behind
            self.supervisor.kill_now()
            self._start_failed("core start cancelled")
            raise

    async def fill(self, segments: list[str], budgets: list[int], params: dict,
                   request_id: str | None = None, stops: list[dict] | None = None,
                   on_progress: Callable[[dict], None] | None = None) -> dict:
        """{"texts": [...], "stats": {...}}; cancelling the awaiting task cancels it in the core.

        stops: one map per hole of protocol.STOP_KEYS (max_lines, dedent_below, min_depth), or None.
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

    async def close(self) -> None:
        """Stop using the core; a private core is shut down and its directory removed."""
        if self.state is CoreState.CLOSED:
            return
        self.state = CoreState.CLOSED
        if self._recover is not None:
            self._recover.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._recover
        await self.supervisor.close()
        conn, self._conn = self._conn, None
        self._ready.set()  # requests waiting for a restart see the client closed
        if conn is not None and not conn.lost and self.private:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.call(protocol.SHUTDOWN, {}), 2.0)
        if conn is not None:
            conn.fail_pending("the core client is closed")
        await self.supervisor.stop_live()
        for task in list(self._tasks):
            task.cancel()
        self.supervisor.remove_folder()

    # ------------------------------------------------------------ calls

    async def _call_by(self, conn: CoreSocket, method: str, params: dict, timeout: float,
                       on_progress: Callable[[dict], None] | None = None) -> dict:
        """A call that fails when the core is hung: a fill or warm on a core with
        heartbeats while they keep coming (``CoreSocket.watched``), anything else within
        ``timeout``. A hung call is cancelled in the core, the caller gets CoreUnavailable
        (an empty answer) and the core is reported UNRESPONSIVE."""
        try:
            if method in (protocol.FILL, protocol.WARM) and conn.heartbeat_s:
                result = await conn.watched(method, params, on_progress, self.hung_after, self.stall_after)
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

    async def _ready_connection(self) -> CoreSocket:
        if self.state is CoreState.CLOSED:
            raise CoreUnavailable("the core client is closed")
        if self.state is CoreState.IDLE:
            raise CoreUnavailable("the core client is not started")
        if self.state is CoreState.FAILED:
            raise CoreUnavailable(f"the core failed to start: {self._restart_error}")
        if self._conn is not None and not self._conn.lost:
            return self._conn
        if not self.private:  # external core: one reconnection attempt per request
            return await self._reconnect()
        if self._restart_error:  # the restart loop already failed: answer now, it keeps trying
            raise CoreUnavailable(f"the private core is down ({self._restart_error}); restarting it")
        try:
            await self.supervisor.within_start_deadline(self._ready.wait())
        except asyncio.TimeoutError:
            raise CoreUnavailable("the private core is restarting; try again shortly") from None
        if self._conn is None:
            if self.state is CoreState.CLOSED:
                raise CoreUnavailable("the core client is closed")
            if self.state is CoreState.FAILED:
                raise CoreUnavailable(f"the core failed to start: {self._restart_error}")
            raise CoreUnavailable(f"the private core is down ({self._restart_error}); restarting it")
        return self._conn

    async def _reconnect(self) -> CoreSocket:
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

    # ------------------------------------------------------------ connecting

    async def _open(self) -> None:
        sup = self.supervisor
        if self.private:
            await sup.spawn()
            if self.state is CoreState.CLOSED:
                sup.kill_now()
                raise CoreUnavailable("the core client is closed")
        address = self.address or protocol.Address("unix", path=sup.socket_path())
        conn, hello = await self._connect(address, sup.proc if self.private else None)
        if self.state is CoreState.CLOSED:  # close() ran while we were connecting
            conn.fail_pending("the core client is closed")
            sup.kill_now()
            raise CoreUnavailable("the core client is closed")
        self._ready_on(conn, hello)
        self._want_standby = self.standby and self.private and sup.standby is None

    async def _connect(self, address: protocol.Address, proc: Any,
                       standby: Standby | None = None) -> tuple[CoreSocket, dict]:
        """Open the socket (a private core's, `proc`, polled until it listens or exits),
        watch it and shake hands."""
        if self.private and proc is None:
            raise CoreUnavailable(self.supervisor.exit_message(standby))
        conn = await open_socket(address, self.connect_timeout, proc,
                                 lambda: self.supervisor.exit_message(standby))
        conn.task = self._spawn_task(self._watch(conn))
        return conn, await conn.hello(self.token, self.connect_timeout)

    def _ready_on(self, conn: CoreSocket, hello: dict | None) -> None:
        """``conn`` is the live connection now: READY, and requests waiting for it woken."""
        self.server_info = hello.get("info", {}) if isinstance(hello, dict) and isinstance(hello.get("info"), dict) else {}
        self._restart_error = ""
        self._conn = conn
        self.state = CoreState.READY
        self._ready.set()

    def _start_failed(self, reason: str) -> None:
        """FAILED, and wake requests that were waiting for this start."""
        if self.state is not CoreState.CLOSED:
            self.state = CoreState.FAILED
        self._restart_error = reason
        self._ready.set()
        self._ready.clear()

    async def _watch(self, conn: CoreSocket) -> None:
        reason = await conn.read_loop()
        conn.fail_pending(f"core connection lost: {reason}")
        if self.state is CoreState.CLOSED:
            return
        if self.supervisor.lost_standby(conn):
            log.warning("the standby core was lost (%s); another starts after the next fill", reason)
            self._want_standby = self.standby
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

    # ------------------------------------------------------------ recovery

    async def _restart_loop(self) -> None:
        if await self._take_over():
            return
        delay, max_delay = self.backoff
        while self.state is CoreState.RESTARTING:
            await self.supervisor.stop_live()
            try:
                await self.supervisor.within_start_deadline(self._open())
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

    async def _take_over(self) -> bool:
        """The live core is lost: promote the standby (waiting for it if it is still starting).
        False when there is none to promote, and the core is started afresh."""
        standby = await self.supervisor.take_standby()
        if standby is None:
            return False
        if self.state is not CoreState.RESTARTING:
            await self.supervisor.discard(standby)
            return False
        self._ready_on(standby.conn, {"info": standby.info or {}})
        self.restarts += 1
        self._want_standby = self.standby
        self._emit(EVENT_RESTARTED, "diffill: the private core was replaced by its standby")
        return True

    def _maybe_start_standby(self) -> None:
        """After an answered fill: start the standby if this live core has none yet."""
        if not self._want_standby or self.state is not CoreState.READY:
            return
        self._want_standby = False
        self.supervisor.start_standby(self._connect)

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
