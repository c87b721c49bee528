"""The server's view of the denoising core: a ``typing.Protocol`` and its lifecycle.

Owns: the ``CoreConnection`` protocol the handlers program against (so they and the
tests never touch a subprocess: tests pass a fake), the state of the link (starting,
ready, failed), and the one adapter onto ``lsp_server.core_client.CoreClient``.

Must not know: LSP types, documents, grammars, torch. The core client itself is owned
by the service engineer; it is imported lazily here so this module loads without it.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from typing import Any, Awaitable, Callable, Protocol

from diffusion_core import protocol
from lsp_server.settings import Settings

log = logging.getLogger(__name__)

# How long a request waits for the core to come up (loading a model from a cold disk
# on a slow machine takes a while); after that it gets an empty answer.
_WAIT_FOR_START_S = 300.0


class CoreConnection(Protocol):
    """What the server needs from a core. ``CoreClient`` satisfies it as is."""

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


OnEvent = Callable[[str, str], Any]  # (kind, one-line message), see core_client
CoreFactory = Callable[[Settings, OnEvent], CoreConnection]


class LinkState(enum.Enum):
    IDLE = "idle"
    STARTING = "starting"
    READY = "ready"
    FAILED = "failed"
    CLOSED = "closed"


class CoreUnready(RuntimeError):
    """The core failed to start or was closed; the message says why in one line."""


def real_core_factory(settings: Settings, on_event: OnEvent) -> CoreConnection:
    """A ``CoreClient`` configured from the editor settings."""
    from lsp_server.core_client import CoreClient  # lazy: owned by the service engineer

    return CoreClient(
        address=settings.core.address or None,
        model_dir=settings.model.path or None,
        device=settings.model.device,
        weights=settings.model.weights,
        token=settings.core.token or None,
        standby=settings.core.standby,
        threads=settings.core.threads,
        on_event=on_event,
    )


def core_errors() -> tuple[type[BaseException], ...]:
    """Exception types of a failed core request (the client's, when it is importable)."""
    try:
        from lsp_server.core_client import CoreRequestError, CoreUnavailable
    except Exception:  # the client is not there yet: nothing specific to catch
        return (CoreUnready, ConnectionError, OSError)
    return (CoreUnready, CoreRequestError, CoreUnavailable, ConnectionError, OSError)


class CoreLink:
    """Owns one CoreConnection: starts it in the background, waits for it, swaps it
    when the model/device/address settings change."""

    def __init__(self, factory: CoreFactory, on_event: OnEvent):
        self._factory = factory
        self._on_event = on_event
        self._conn: CoreConnection | None = None
        self._ready: asyncio.Future[None] | None = None
        self.state = LinkState.IDLE
        self.error = ""
        self.key: tuple = ()

    @staticmethod
    def settings_key(settings: Settings) -> tuple:
        return (settings.model, settings.core)

    def needs_restart(self, settings: Settings) -> bool:
        return self.state is not LinkState.IDLE and self.key != self.settings_key(settings)

    def _pending(self) -> asyncio.Future[None]:
        """The future requests wait on; a fresh one once the last has resolved."""
        if self._ready is None or self._ready.done():
            self._ready = asyncio.get_running_loop().create_future()
        return self._ready

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
        self.state = LinkState.STARTING
        self.error = ""
        if on_loading:
            await on_loading()
        try:
            self._conn = self._factory(settings, self._on_event)
            await self._conn.start()
        except asyncio.CancelledError:
            self.state = LinkState.CLOSED
            self._fail(ready, "core start cancelled")
            raise
        except Exception as exc:  # any start failure becomes one line for the user
            self.state = LinkState.FAILED
            self.error = f"diffill core failed to start: {protocol.one_line(exc)}"
            log.error(self.error)
            self._fail(ready, self.error)
        else:
            self.state = LinkState.READY
            if not ready.done():
                ready.set_result(None)
        if on_loaded:
            await on_loaded(self.error if self.state is LinkState.FAILED else "")

    async def connection(self, timeout: float = _WAIT_FOR_START_S) -> CoreConnection:
        """The ready connection; waits while it starts; CoreUnready when it cannot."""
        if self.state in (LinkState.FAILED, LinkState.CLOSED):
            raise CoreUnready(self.error or "diffill core not running")
        ready = self._ready if self._ready is not None and not self._ready.done() else None
        if self.state is not LinkState.READY or ready is not None:
            try:
                await asyncio.wait_for(asyncio.shield(ready or self._pending()), timeout)
            except asyncio.TimeoutError:
                raise CoreUnready(f"diffill core not ready after {timeout:.0f} s") from None
        if self._conn is None or self.state is not LinkState.READY:
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
        info = getattr(self._conn, "server_info", None) if self.state is LinkState.READY else None
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
        await self._drop_connection()
        if self.state is not LinkState.IDLE:
            self.state = LinkState.CLOSED

