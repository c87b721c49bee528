"""Starting the core: once, after ``initialized``, with ``$/progress``; again when the
model/device/address settings change; closed at shutdown.

Owns: when the server may start the core, the background start that never cancels a
start under way (it checks the settings again when it ends), the loading ``$/progress``
bar fed by the core's load progress, and the one-time messages of the core's events
(died, restarted, failed to start).

Must not know: how a core is started or reached (``core_link``, ``core_client``),
documents, torch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from lsprotocol import types

from lsp_server.core_client import EVENT_PROGRESS, CoreState

if TYPE_CHECKING:
    from lsp_server.runtime import DiffillServer

log = logging.getLogger(__name__)

_PROGRESS_TOKEN = "diffill/loading"


class CoreStart:
    """The core start feature of one server."""

    def __init__(self, ls: DiffillServer) -> None:
        self.ls = ls
        self._task: asyncio.Task | None = None
        self._may_start = False  # set by allow once `initialized` ran
        self._load_token: str | None = None  # the $/progress bar of the start under way

    def allow(self) -> None:
        """Called once ``initialized`` has read the configuration: from now on
        ``ensure`` starts the core. A didChangeConfiguration that editors send right
        after ``initialized`` only updates the settings until then, so the first start
        sees every setting and happens once."""
        self._may_start = True
        self.ensure()

    def ensure(self) -> None:
        """Start the core in the background (or restart it after a settings change).

        Never cancels a start under way: a cancelled start left a progress bar open, a
        request future the client's late answer then failed on, and waiting requests
        answered empty. The running start checks the settings again when it ends."""
        if not self._may_start:
            return
        if self._task is not None and not self._task.done():
            return
        link = self.ls.link
        if link.state in (CoreState.IDLE, CoreState.FAILED) or link.needs_restart(self.ls.settings):
            self._task = asyncio.ensure_future(self._start_until_current())

    async def _start_until_current(self) -> None:
        """One start, then another only if the model/device/address settings changed
        while it ran (the editor changed them mid-load)."""
        await self._start()
        while self.ls.link.state is not CoreState.CLOSED and self.ls.link.needs_restart(self.ls.settings):
            await self._start()

    async def _start(self) -> None:
        ls = self.ls
        ls.stats.count("coreStarts")
        token = None
        caps = ls.client_capabilities
        if caps and caps.window and caps.window.work_done_progress:
            token = f"{_PROGRESS_TOKEN}/{time.monotonic_ns()}"
            try:
                await asyncio.wait_for(ls.work_done_progress.create_async(token), timeout=5)
            except Exception as exc:
                log.warning("progress create failed: %s", exc)
                token = None

        async def loading() -> None:
            self._load_token = token  # the core's load progress is reported under it (on_event)
            if token is not None:
                where = ls.settings.core.address or ls.settings.model.path or "default model"
                ls.work_done_progress.begin(
                    token, types.WorkDoneProgressBegin(title="diffill", message=f"loading {where}", cancellable=False)
                )

        async def loaded(error: str) -> None:
            self._load_token = None
            if token is not None:
                ls.work_done_progress.end(token, types.WorkDoneProgressEnd(message=error or "model ready"))
            if error:
                ls.tell_once(f"core-start:{error}", error, types.MessageType.Error)

        await ls.link.start(ls.settings, on_loading=loading, on_loaded=loaded)

    def on_event(self, kind: str, message: str) -> None:
        """The core client tells once when a core dies or is restarted; a load's progress
        (core_client.EVENT_PROGRESS) goes to the start's $/progress bar."""
        ls = self.ls
        if kind == EVENT_PROGRESS:
            if self._load_token is not None:
                ls.work_done_progress.report(self._load_token, types.WorkDoneProgressReport(message=message))
            log.info("core loading: %s", message)
            return
        log.warning("core %s: %s", kind, message)
        text = message if message.startswith("diffill: ") else f"diffill: {message}"  # said once, not "diffill: diffill:"
        ls.tell_once(f"core-event:{kind}:{message}", text)

    async def close(self) -> None:
        self.ls.completion.windows.close()
        if self._task is not None and not self._task.done():
            self._task.cancel()
        await self.ls.link.close()
