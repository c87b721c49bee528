"""The language server object and the state every feature shares.

Owns: ``DiffillServer`` (a pygls ``LanguageServer``) holding the settings, documents,
counters, the feedback log, the core link and the features (``lsp_server.features``:
completion, fill holes, status, core start); settings updates with their one-time
message; the one-time messages themselves; ``DiffillProtocol``, pygls without its own
copy of each document.

Must not know: how results look on the wire (conversions.py), how a completion or a fill
is made (the features), grammars internals, torch. Handlers live in server.py.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
from importlib import metadata
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol
from pygls.protocol.language_server import lsp_method

from lsp_server import settings as settings_mod
from lsp_server.core_link import CoreFactory, CoreLink, real_core_factory
from lsp_server.documents import DocumentStore, OpenDoc
from lsp_server.features.completion import Answer, Completion
from lsp_server.features.core_start import CoreStart
from lsp_server.feedback import FeedbackLog, Stats, default_log_path
from lsp_server.settings import CoreSettings, ModelSettings, Settings

log = logging.getLogger(__name__)


def _version() -> str:
    try:
        return metadata.version("diffill")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


VERSION = _version()
_ENCODINGS = {"utf-8": "utf-8", "utf-16": "utf-16", "utf-32": "utf-32"}
# A future the server cancelled and something later tried to resolve.
_CANCELLED_FUTURE_ERRORS = (asyncio.CancelledError, asyncio.InvalidStateError, concurrent.futures.InvalidStateError)


class DiffillProtocol(LanguageServerProtocol):
    """pygls' protocol without its own copy of every open document.

    The server keeps documents in ``DocumentStore`` (grammars documents with their
    trees); pygls' workspace copy costs a second copy of each file and, on a huge one, a
    split into lines again on every keystroke (docs/benchmarks.md, "Huge documents").
    These overrides only forward the notifications to the server's handlers."""

    @lsp_method(types.TEXT_DOCUMENT_DID_OPEN)
    def lsp_text_document__did_open(self, params: types.DidOpenTextDocumentParams):
        if (handler := self.fm.features.get(types.TEXT_DOCUMENT_DID_OPEN)) is not None:
            yield handler, (params,), None

    @lsp_method(types.TEXT_DOCUMENT_DID_CHANGE)
    def lsp_text_document__did_change(self, params: types.DidChangeTextDocumentParams):
        if (handler := self.fm.features.get(types.TEXT_DOCUMENT_DID_CHANGE)) is not None:
            yield handler, (params,), None

    @lsp_method(types.TEXT_DOCUMENT_DID_CLOSE)
    def lsp_text_document__did_close(self, params: types.DidCloseTextDocumentParams):
        if (handler := self.fm.features.get(types.TEXT_DOCUMENT_DID_CLOSE)) is not None:
            yield handler, (params,), None

    def _handle_response(self, msg_id: Any, result: Any = None, error: Any = None) -> None:
        """A client's answer to a request the server stopped waiting for (a timed-out
        workspace/configuration, a progress create of a start cut short by shutdown)
        is dropped: pygls would set the result on the cancelled future and report the
        InvalidStateError to the user as an internal error."""
        future = self._request_futures.get(msg_id)
        if future is not None and future.cancelled():
            self._request_futures.pop(msg_id, None)
            log.debug("dropped the answer to request %s: no longer awaited", msg_id)
            return
        super()._handle_response(msg_id, result, error)


class DiffillServer(LanguageServer):
    def __init__(self, core_factory: CoreFactory = real_core_factory) -> None:
        super().__init__("diffill", VERSION, text_document_sync_kind=types.TextDocumentSyncKind.Incremental,
                         protocol_cls=DiffillProtocol)
        self.settings = Settings()
        self._model_defaults = ("", "", "")  # see set_model_defaults
        self.docs = DocumentStore()
        self.stats = Stats()
        self.feedback = FeedbackLog(None, self.stats)
        self.link = CoreLink(core_factory, self._on_core_event)
        self.completion = Completion(self)
        self.core_start = CoreStart(self)
        self._told: set[str] = set()
        self._threads_default = 0  # what core.threads 0 stands for (diffill lsp --threads)
        self._apply_feedback_path()

    # -- small helpers -------------------------------------------------------------

    @property
    def encoding(self) -> str:
        """The negotiated position encoding, in grammars' spelling."""
        try:
            enc = self.workspace.position_encoding
        except RuntimeError:  # before initialize
            return "utf-16"
        return _ENCODINGS.get(str(getattr(enc, "value", enc)), "utf-16")

    def tell_once(self, key: str, message: str, kind: types.MessageType = types.MessageType.Warning) -> None:
        """One window/showMessage per distinct ``key`` for this session; always logged."""
        log.warning(message)
        if key in self._told:
            return
        self._told.add(key)
        self.window_show_message(types.ShowMessageParams(type=kind, message=message))

    def report_server_error(self, error: Exception, source: Any) -> None:
        """pygls shows every unexpected handler error to the user; a bug hit on each
        keystroke would flood the editor, so tell once per kind of error and log the rest."""
        from pygls.exceptions import FeatureRequestError

        if source is FeatureRequestError:  # a request already answers with the error
            return
        if isinstance(error, _CANCELLED_FUTURE_ERRORS):  # internal bookkeeping, nothing the user can act on
            log.warning("ignored: %s", error)
            return
        self.tell_once(f"server-error:{type(error).__name__}", f"diffill: internal error: {error}", types.MessageType.Error)

    def _apply_feedback_path(self) -> None:
        fb = self.settings.feedback
        self.feedback.path = (Path(fb.path).expanduser() if fb.path else default_log_path()) if fb.enable else None

    # -- settings -------------------------------------------------------------------

    def update_settings(self, data: Any, origin: str) -> None:
        """Merge editor JSON over the current settings; bad keys keep their value and
        are named in one message."""
        new, bad = settings_mod.parse(data, self.settings)
        if bad:
            keys = ", ".join(bad)
            self.tell_once(
                f"settings:{origin}:{keys}",
                f"diffill: ignoring bad setting(s) {keys} from {origin}; using the previous or default values",
            )
        self.settings = self._with_model_defaults(new)
        self._apply_feedback_path()

    def set_model_defaults(self, path: str = "", device: str = "", weights: str = "") -> None:
        """What ``model.path`` "", ``model.device`` "auto" and ``model.weights`` "auto" stand for
        (``diffill lsp --model/--device/--weights``): editors send those defaults explicitly, so
        the command line's choice must survive them; any other value the editor sends wins."""
        self._model_defaults = (path, device, weights)
        self.settings = self._with_model_defaults(self.settings)

    def _with_model_defaults(self, s: Settings) -> Settings:
        path, device, weights = self._model_defaults
        m = s.model
        model = dataclasses.replace(
            m,
            path=m.path or path,
            device=device if device and m.device == ModelSettings().device else m.device,
            weights=weights if weights and m.weights == ModelSettings().weights else m.weights,
        )
        s = s if model == m else dataclasses.replace(s, model=model)
        if self._threads_default and s.core.threads == CoreSettings().threads:
            s = dataclasses.replace(s, core=dataclasses.replace(s.core, threads=self._threads_default))
        return s

    def set_threads_default(self, threads: int) -> None:
        """What ``core.threads`` 0 stands for (``diffill lsp --threads``); a value the editor sets wins."""
        self._threads_default = threads
        self.settings = self._with_model_defaults(self.settings)

    async def pull_configuration(self) -> None:
        """workspace/configuration for section 'diffill', when the client has it."""
        caps = self.client_capabilities
        if not (caps and caps.workspace and caps.workspace.configuration):
            return
        try:
            result = await asyncio.wait_for(
                self.workspace_configuration_async(
                    types.ConfigurationParams(items=[types.ConfigurationItem(section=settings_mod.SECTION)])
                ),
                timeout=5,
            )
        except Exception as exc:
            log.warning("workspace/configuration failed: %s", exc)
            return
        if result and result[0] is not None:
            self.update_settings(result[0], "workspace/configuration")

    # -- entry points other than the handlers ------------------------------------------

    async def close_core(self) -> None:
        """guards.start_io closes the core by this name on every way out."""
        await self.core_start.close()

    def _on_core_event(self, kind: str, message: str) -> None:
        """What the core link is told (core_client.EVENT_*); see CoreStart.on_event."""
        self.core_start.on_event(kind, message)

    async def complete(self, uri: str, line: int, character: int, *, debounce: bool, doc: Any = None) -> Answer | None:
        """``Completion.complete``, as tests/test_one_pipeline.py asks the server."""
        return await self.completion.complete(uri, line, character, debounce=debounce, doc=doc)

    # -- documents --------------------------------------------------------------------

    def usable(self, uri: str) -> OpenDoc | None:
        entry = self.docs.get(uri)
        if entry is None or entry.doc is None or not self.settings.serves(entry.language_id):
            return None
        return entry

    def opened(self, uri: str, language_id: str, version: int, text: str) -> None:
        """didOpen: the document the user is looking at now."""
        self.docs.open(uri, language_id, version, text)
        self.completion.focus.edited(uri)

    def changed(self, uri: str, version: int, changes: list) -> None:
        """didChange: the fill under way for the old text is wasted work; apply the edits."""
        self.completion.edited(uri)
        self.docs.change(uri, version, changes, self.encoding)

    def closed(self, uri: str) -> None:
        """didClose: forget everything held for the document."""
        self.completion.forget(uri)
        self.docs.close(uri)
        self.feedback.closed(uri)
