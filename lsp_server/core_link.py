"""The server's one core: a ``typing.Protocol`` for it, and the link that holds it.

Owns: the ``CoreConnection`` protocol the handlers and the pipeline program against (so
they and the tests never touch a subprocess: tests pass a fake, ``diffill fill`` an
in-process ``LocalCore``), ``real_core_factory`` (a ``CoreClient`` from the editor
settings), and ``CoreLink``: the connection made from the current settings, started in
the background, swapped when the model/device/address settings change, and waited for
by requests that come while it starts.

The link keeps no lifecycle of its own: its ``state`` is its connection's
(``core_client.CoreState``, the one state machine), or, for a connection without one
(a fake, ``LocalCore``) and around its start, what that start says (STARTING while it
runs, FAILED with the reason, IDLE before any, CLOSED after close). A request waits for
a start by the same rule the core client starts by (``core_process.start_deadline``).

Must not know: LSP types, documents, grammars, torch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable, Protocol

from diffusion_core import protocol
from lsp_server import core_client
from lsp_server.core_client import EVENT_PROGRESS, CoreState
from lsp_server.core_process import START_TIMEOUT_S, start_deadline
from lsp_server.core_socket import CoreRequestError, CoreUnavailable
from lsp_server.settings import Settings

log = logging.getLogger(__name__)


class CoreConnection(Protocol):
    """What the server needs from a core. ``CoreClient`` satisfies it as is, and tells
    its ``state`` (a ``CoreState``) and ``server_info`` too; a connection without them is
    READY once started."""

    async def start(self) -> None: ...

    async def fill(
        self,
        segments: list[str],
        budgets: list[int],
        params: dict,
        request_id: str | None = None,
        stops: list[dict] | None = None,  # per hole, protocol.STOP_KEYS (engine contract)
        on_progress: Callable[[dict], None] | None = None,  # the core's heartbeats, when it sends them
    ) -> dict: ...

    async def status(self) -> dict: ...

    async def close(self) -> None: ...


OnEvent = Callable[[str, str], Any]  # (kind, one-line message), core_client.EVENT_*
CoreFactory = Callable[[Settings, OnEvent], CoreConnection]


class CoreUnready(RuntimeError):
    """The core failed to start or was closed; the message says why in one line."""


# What a failed core request raises, whatever the connection.
CORE_ERRORS: tuple[type[BaseException], ...] = (CoreUnready, CoreRequestError, CoreUnavailable, ConnectionError, OSError)


def real_core_factory(settings: Settings, on_event: OnEvent) -> CoreConnection:
    """A ``CoreClient`` configured from the editor settings."""
    return core_client.CoreClient(
        address=settings.core.address or None,
        model_dir=settings.model.path or None,
        device=settings.model.device,
        weights=settings.model.weights,
        token=settings.core.token or None,
        standby=settings.core.standby,
        threads=settings.core.threads,
        on_event=on_event,
    )


class CoreLink:
    """Holds one CoreConnection: starts it in the background, lets requests wait for it,
    swaps it when the model/device/address settings change."""

    def __init__(self, factory: CoreFactory, on_event: OnEvent):
        self._factory = factory
        self._on_event = on_event
        self._conn: CoreConnection | None = None
        self._ready: asyncio.Future[None] | None = None  # what requests wait on while a start is due
        self._starting = False
        self._closed = False
        self._progress_at = 0.0  # when the starting core last reported load progress (monotonic)
        self.error = ""  # why the last start failed; "" when it did not
        self.key: tuple = ()

    @property
    def state(self) -> CoreState:
        if self._closed:
            return CoreState.CLOSED
        if self._starting:
            return CoreState.STARTING
        if self.error:
            return CoreState.FAILED
        if self._conn is None:
            return CoreState.IDLE
        own = getattr(self._conn, "state", None)
        return own if isinstance(own, CoreState) else CoreState.READY

    def _started(self) -> bool:
        """The current connection's start succeeded (whatever it has been through since)."""
        return self._conn is not None and not (self._closed or self._starting or self.error)

    @staticmethod
    def settings_key(settings: Settings) -> tuple:
        return (settings.model, settings.core)

    def needs_restart(self, settings: Settings) -> bool:
        return self.state is not CoreState.IDLE and self.key != self.settings_key(settings)

    def _pending(self) -> asyncio.Future[None]:
        """The future requests wait on; a fresh one once the last has resolved."""
        if self._ready is None or self._ready.done():
            self._ready = asyncio.get_running_loop().create_future()
        return self._ready

    def _event(self, kind: str, message: str) -> Any:
        if kind == EVENT_PROGRESS:  # a waiting request's deadline runs from here (the one wait rule)
            self._progress_at = time.monotonic()
        return self._on_event(kind, message)

    async def start(
        self,
        settings: Settings,
        on_loading: Callable[[], Awaitable[None]] | None = None,
        on_loaded: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        """Start (or restart) the core; returns when it is ready or has failed.
        Requests that arrived before (the editor may ask before ``initialized`` has
        started the core) wait for this start."""
        await self._drop_connection()
        ready = self._pending()
        self.key = self.settings_key(settings)
        self._starting, self._closed, self.error = True, False, ""
        if on_loading:
            await on_loading()
        try:
            self._conn = self._factory(settings, self._event)
            await self._conn.start()
        except asyncio.CancelledError:
            self._starting, self._closed = False, True
            self._fail(ready, "core start cancelled")
            raise
        except Exception as exc:  # any start failure becomes one line for the user
            self._starting = False
            self.error = f"diffill core failed to start: {protocol.one_line(exc)}"
            log.error(self.error)
            self._fail(ready, self.error)
        else:
            self._starting = False
            if not ready.done():
                ready.set_result(None)
        if on_loaded:
            await on_loaded(self.error)

    async def connection(self) -> CoreConnection:
        """The started connection; waits while it starts (or until a start comes), by the
        one wait rule; CoreUnready when it cannot."""
        if self.state in (CoreState.FAILED, CoreState.CLOSED):
            raise CoreUnready(self.error or "diffill core not running")
        ready = self._ready if self._ready is not None and not self._ready.done() else None
        if not self._started() or ready is not None:
            try:
                await start_deadline(asyncio.shield(ready or self._pending()), START_TIMEOUT_S,
                                     lambda: self._progress_at)
            except asyncio.TimeoutError:
                raise CoreUnready(f"diffill core not ready after {START_TIMEOUT_S:.0f} s without load progress") from None
        if not self._started():
            raise CoreUnready(self.error or "diffill core not running")
        return self._conn

    async def fill(self, segments: list[str], budgets: list[int], params: dict,
                   request_id: str | None = None, stops: list[dict] | None = None,
                   on_progress: Callable[[dict], None] | None = None) -> dict:
        """``CoreConnection.fill`` on the ready connection (waits while it starts), so
        the pipeline is handed the link and a request with nothing to fill never waits."""
        conn = await self.connection()
        more = {"on_progress": on_progress} if on_progress is not None else {}
        return await conn.fill(segments, budgets, params, request_id=request_id, stops=stops, **more)

    async def warm(self, segments: list[str], budget: int, params: dict) -> dict:
        """Have the core encode a one-hole fill's context at idle priority (the core's
        ``warm``); {} from a connection that has no warm-ups (a fake, an older core)."""
        conn = await self.connection()
        warm = getattr(conn, "warm", None)
        return await warm(segments, budget, params) if warm is not None else {}

    def device(self) -> str:
        """The device the connected core runs on, as its hello said ("" when unknown)."""
        info = getattr(self._conn, "server_info", None) if self._started() else None
        return str(info.get("device") or "") if isinstance(info, dict) else ""

    @staticmethod
    def _fail(ready: asyncio.Future[None], message: str) -> None:
        if not ready.done():
            ready.set_exception(CoreUnready(message))
            ready.exception()  # mark retrieved: there may be no waiter

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await asyncio.wait_for(conn.close(), timeout=10)
            except Exception as exc:
                log.warning("closing the core: %s", protocol.one_line(exc))

    async def close(self) -> None:
        if self._ready is not None:
            self._fail(self._ready, "diffill core closed")
        started = self._conn is not None or self._starting or bool(self.error)
        await self._drop_connection()
        if started:
            self._closed = True
