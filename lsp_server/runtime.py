"""The language server object and the state every handler shares.

Owns: ``DiffillServer`` (a pygls ``LanguageServer``) holding settings, documents,
the core link, cache, debounce and counters; the LSP side of a completion that every
completion handler runs around the fill pipeline (``lsp_server.pipeline``): newest
wins, typed-ahead cache, debounce, version check, counters; settings updates with
their one-time message; starting the core with ``$/progress``.

Must not know: how results look on the wire (results.py), grammars internals,
torch. Handlers live in server.py.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcContentModified
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol
from pygls.protocol.language_server import lsp_method

from lsp_server import settings as settings_mod
from lsp_server.cache import FillCache
from lsp_server.core_link import CoreFactory, CoreLink, CoreUnready, LinkState, core_errors, real_core_factory
from lsp_server.documents import DocumentStore, OpenDoc, with_selected
from lsp_server.feedback import FeedbackLog, Stats, default_log_path
from lsp_server import pipeline
from lsp_server.pipeline import Candidate, Outcome
from lsp_server.debounce import Debouncer, Focus, Latest
from lsp_server.settings import CoreSettings, ModelSettings, Settings
from lsp_server.windows import Windows

log = logging.getLogger(__name__)

VERSION = "0.1.0"
_ENCODINGS = {"utf-8": "utf-8", "utf-16": "utf-16", "utf-32": "utf-32"}
_PROGRESS_TOKEN = "diffill/loading"
# A future the server cancelled and something later tried to resolve.
_CANCELLED_FUTURE_ERRORS = (asyncio.CancelledError, asyncio.InvalidStateError, concurrent.futures.InvalidStateError)


class DiffillProtocol(LanguageServerProtocol):
    """pygls' protocol without its own copy of every open document.

    The server keeps documents in ``DocumentStore`` (grammars documents with their
    trees); pygls' workspace copy costs a second copy of each file and, measured on a
    10 MB file, 0.4 s per keystroke to split it into lines again. These overrides
    only forward the notifications to the server's handlers."""

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


@dataclass
class Answer:
    """A completion that got through the pipeline, with the snapshot it is for."""

    entry: OpenDoc
    doc: Any  # the grammars Document the byte offsets refer to
    outcome: Outcome
    cursor: int
    latency_ms: float
    accept_ids: list[str]  # one per candidate, for the items' diffill.accepted command


class DiffillServer(LanguageServer):
    def __init__(self, core_factory: CoreFactory = real_core_factory) -> None:
        super().__init__("diffill", VERSION, text_document_sync_kind=types.TextDocumentSyncKind.Incremental,
                         protocol_cls=DiffillProtocol)
        self.settings = Settings()
        self._model_defaults = ("", "", "")  # see set_model_defaults
        self.docs = DocumentStore()
        self.cache = FillCache()
        self.latest = Latest()
        self.focus = Focus()
        self.debouncer = Debouncer()
        self.doc_stats: dict[str, dict] = {}  # per document: what its last fill cost the core (diffill/status)
        self.windows = Windows()  # short window first, the full one warmed (lsp_server.windows)
        self._line_only: set[str] = set()  # documents whose cached fill is a cold request's first line only
        self.stats = Stats()
        self.feedback = FeedbackLog(None, self.stats)
        self.link = CoreLink(core_factory, self._on_core_event)
        self._told: set[str] = set()
        self._threads_default = 0  # what core.threads 0 stands for (diffill lsp --threads)
        self._core_task: asyncio.Task | None = None
        self._may_start_core = False  # set by allow_core_start once `initialized` ran
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

    def _on_core_event(self, kind: str, message: str) -> None:
        """The core client tells once when a core dies or is restarted; a load's progress
        ("progress": core_client.EVENT_PROGRESS) goes to the start's $/progress bar."""
        if kind == "progress":
            token = getattr(self, "_load_token", None)
            if token is not None:
                self.work_done_progress.report(token, types.WorkDoneProgressReport(message=message))
            log.info("core loading: %s", message)
            return
        log.warning("core %s: %s", kind, message)
        text = message if message.startswith("diffill: ") else f"diffill: {message}"  # said once, not "diffill: diffill:"
        self.tell_once(f"core-event:{kind}:{message}", text)

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

    # -- core -------------------------------------------------------------------------

    def allow_core_start(self) -> None:
        """Called once ``initialized`` has read the configuration: from now on
        ``ensure_core`` starts the core. A didChangeConfiguration that editors send
        right after ``initialized`` only updates the settings until then, so the first
        start sees every setting and happens once."""
        self._may_start_core = True
        self.ensure_core()

    def ensure_core(self) -> None:
        """Start the core in the background (or restart it after a settings change).

        Never cancels a start under way: a cancelled start left a progress bar open, a
        request future the client's late answer then failed on, and waiting requests
        answered empty. The running start checks the settings again when it ends."""
        if not self._may_start_core:
            return
        if self._core_task is not None and not self._core_task.done():
            return
        if self.link.state in (LinkState.IDLE, LinkState.FAILED) or self.link.needs_restart(self.settings):
            self._core_task = asyncio.ensure_future(self._start_core_until_current())

    async def _start_core_until_current(self) -> None:
        """One start, then another only if the model/device/address settings changed
        while it ran (the editor changed them mid-load)."""
        await self._start_core()
        while self.link.state is not LinkState.CLOSED and self.link.needs_restart(self.settings):
            await self._start_core()

    async def _start_core(self) -> None:
        self.stats.count("coreStarts")
        token = None
        caps = self.client_capabilities
        if caps and caps.window and caps.window.work_done_progress:
            token = f"{_PROGRESS_TOKEN}/{time.monotonic_ns()}"
            try:
                await asyncio.wait_for(self.work_done_progress.create_async(token), timeout=5)
            except Exception as exc:
                log.warning("progress create failed: %s", exc)
                token = None

        async def loading() -> None:
            self._load_token = token  # the core's load progress is reported under it (_on_core_event)
            if token is not None:
                where = self.settings.core.address or self.settings.model.path or "default model"
                self.work_done_progress.begin(
                    token, types.WorkDoneProgressBegin(title="diffill", message=f"loading {where}", cancellable=False)
                )

        async def loaded(error: str) -> None:
            self._load_token = None
            if token is not None:
                self.work_done_progress.end(token, types.WorkDoneProgressEnd(message=error or "model ready"))
            if error:
                self.tell_once(f"core-start:{error}", error, types.MessageType.Error)

        await self.link.start(self.settings, on_loading=loading, on_loaded=loaded)

    async def close_core(self) -> None:
        self.windows.close()
        if self._core_task is not None and not self._core_task.done():
            self._core_task.cancel()
        await self.link.close()

    # -- the completion pipeline ----------------------------------------------------

    def usable(self, uri: str) -> OpenDoc | None:
        entry = self.docs.get(uri)
        if entry is None or entry.doc is None or not self.settings.serves(entry.language_id):
            return None
        return entry

    async def complete(
        self,
        uri: str,
        line: int,
        character: int,
        *,
        debounce: bool,
        doc: Any = None,
    ) -> Answer | None:
        """Newest-wins completion at a cursor. Returns None for nothing to offer;
        raises CancelledError when superseded (pygls answers -32800) and
        JsonRpcContentModified when the document changed under a finished fill."""
        entry = self.usable(uri)
        if entry is None:
            return None
        t0 = time.perf_counter()
        self.stats.count("requests")
        if debounce and not self.focus.admit(uri):
            # One of a burst of automatic requests for several documents (Neovim 0.12-dev
            # asks for every open buffer): not the one the user is editing (counted as offscreen).
            return None
        self.latest.claim(uri)
        self.debouncer.observe(uri)
        version = entry.version
        doc = doc if doc is not None else entry.doc
        enc = self.encoding
        cursor = doc.offset_at(line, character, encoding=enc)  # the one conversion of this request
        try:
            # Let the request this one superseded run its cancellation first (it tells the
            # core to drop its fill), so a burst never fills the core's per-client queue.
            await asyncio.sleep(0)
            # An invoked request wants the whole fill: not a cold automatic one's first line.
            outcome = self.from_cache(uri, doc, cursor) if debounce or uri not in self._line_only else None
            if outcome is None:
                if debounce:
                    s = self.settings.debounce
                    await self.debouncer.wait(uri, s.min_ms, s.max_ms)
                # The LSP request id travels to the core, so both logs name the request.
                rid = f"lsp-{self.protocol.msg_id}"
                outcome = await self.fill_at(uri, doc, cursor, rid, automatic=debounce)
        except asyncio.CancelledError:
            self.stats.count("cancelled")
            raise
        except CoreUnready:  # the start failure was told once already
            self.stats.count("unready")
            return None
        except core_errors() as exc:
            self.stats.count("errors")
            self.tell_once(f"core-error:{type(exc).__name__}", f"diffill: completion failed: {exc}")
            return None
        finally:
            self.latest.release(uri)
        if entry.version != version or self.docs.get(uri) is not entry:
            self.stats.count("stale")
            raise JsonRpcContentModified("document changed while filling")
        if outcome is None or not outcome.candidates:
            # noPlan: the planner saw nothing worth completing; emptyFill: post-processing
            # cut the model's fill to nothing
            self.stats.count("noPlan" if outcome is None else "emptyFill")
            return None
        latency = (time.perf_counter() - t0) * 1000
        self.stats.count("answered")
        self.stats.latency(latency)
        for name, ms in outcome.timings.items():
            self.stats.timing(name, ms)
        if outcome.cached:
            self.stats.count("cacheHits")
        # Every item gets its own id, cached ones too; a cached fill is the rest of the
        # one the user is typing into, so it does not dismiss that one.
        accept_ids = self.feedback.shown(uri, entry.language_id, [c.text for c in outcome.candidates], latency,
                                         continues=outcome.cached)
        log.info("fill uri=%s cached=%s latency_ms=%.1f %s", uri, outcome.cached, latency,
                 " ".join(f"{k}={v:.1f}" for k, v in outcome.timings.items()))
        return Answer(entry, doc, outcome, cursor, latency, accept_ids)

    async def complete_with_selected(self, uri: str, start: tuple[int, int], end: tuple[int, int], text: str,
                                     *, debounce: bool) -> Answer | None:
        """``complete`` as if the editor's selected completion item (``text`` over
        start..end) were applied: the fill continues it (LSP 3.18 selectedCompletionInfo)."""
        entry = self.usable(uri)
        shadow = with_selected(entry, start, end, text, self.encoding) if entry is not None else None
        if shadow is None:
            return None
        doc, (line, character) = shadow
        return await self.complete(uri, line, character, debounce=debounce, doc=doc)

    def opened(self, uri: str, language_id: str, version: int, text: str) -> None:
        """didOpen: the document the user is looking at now."""
        self.docs.open(uri, language_id, version, text)
        self.focus.edited(uri)

    def changed(self, uri: str, version: int, changes: list) -> None:
        """didChange: the fill under way for the old text is wasted work; apply the edits."""
        self.latest.cancel(uri)
        self.focus.edited(uri)
        self.docs.change(uri, version, changes, self.encoding)

    def closed(self, uri: str) -> None:
        """didClose: forget everything held for the document."""
        self.latest.cancel(uri)
        self.docs.close(uri)
        self.cache.drop(uri)
        self.debouncer.forget(uri)
        self.focus.forget(uri)
        self.doc_stats.pop(uri, None)
        self.windows.forget(uri)
        self._line_only.discard(uri)
        self.feedback.closed(uri)

    def from_cache(self, uri: str, doc: Any, cursor: int | None) -> Outcome | None:
        """Fills the typed-ahead cache answers without the model; None on a miss."""
        t0 = time.perf_counter()
        hit = self.cache.get(uri, doc.source, cursor) if cursor is not None else None
        if hit is None:
            return None
        cands = [Candidate(t, hit.start, hit.end) for t in hit.texts]
        return Outcome(cands, cached=True, timings={"cache_ms": (time.perf_counter() - t0) * 1000})

    async def fill_at(self, uri: str, doc: Any, cursor: int | None, request_id: str,
                      automatic: bool = False) -> Outcome | None:
        """The pipeline's fill at the cursor; what it answers at the cursor is cached for
        the keystrokes that type it."""
        if cursor is None:
            return None
        # An automatic request on a cold window answers one line: the ghost text comes in
        # the time of a line, and the block follows once the full window is warm.
        outcome = await pipeline.fill_at(self.link, doc, cursor, self.settings, request_id=request_id,
                                         short_window=self._short_window(uri, doc), cold_one_line=automatic)
        if outcome is not None:
            self.note_fill(uri, outcome.core_stats, outcome.timings.get("core_ms", 0.0))
            self._grow_window(uri, doc, outcome)
        if outcome is not None and outcome.candidates and outcome.plan.start_byte == cursor:
            if automatic and outcome.short_window:
                self._line_only.add(uri)
            else:
                self._line_only.discard(uri)
            self.cache.put(uri, doc.source, cursor, outcome.plan.end_byte, [c.text for c in outcome.candidates])
        return outcome

    def _short_window(self, uri: str, doc: Any):
        """The pipeline's short_window hook (lsp_server.windows): the cold prefix size
        while the core does not hold this request's full window, on a CPU core only."""
        c = self.settings.context
        if not c.cold_prefix_bytes or c.cold_prefix_bytes >= c.prefix_bytes or not self.link.device().startswith("cpu"):
            return None

        def choose(plan: Any) -> int | None:
            return None if self.windows.holds(uri, pipeline.window_key(doc, plan, self.settings)) else c.cold_prefix_bytes

        return choose

    def _grow_window(self, uri: str, doc: Any, outcome: Outcome) -> None:
        """After a fill: a full-window one leaves that window in the core; a short one has
        the full window warmed in the background for the next request."""
        plan = outcome.plan
        if plan is None:
            return
        key = pipeline.window_key(doc, plan, self.settings)
        if uri in self.doc_stats:
            self.doc_stats[uri]["lastWindow"] = "short" if outcome.short_window else "full"
        if not outcome.short_window:
            self.windows.hold(uri, key)
            return
        segments = pipeline.segments_at(doc, plan, self.settings)
        budget, params = pipeline.budget_for(plan, self.settings), self.settings.fill_params()
        self.windows.warm(uri, key, lambda: self.link.warm(segments, budget, params))

    def note_fill(self, uri: str, core_stats: dict, fill_ms: float) -> None:
        """What a fill of ``uri`` cost the core, for ``diffill/status``'s per-document view."""
        def num(key: str) -> float:
            v = core_stats.get(key)
            return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else 0.0

        context, reused = int(num("context_tokens")), int(num("reused_tokens"))
        entry = self.doc_stats.setdefault(uri, {"fills": 0})
        entry.update(fills=entry["fills"] + 1, cachedTokens=context, reusedTokens=reused,
                     encodedTokens=max(0, context - reused), reuse=round(reused / context, 3) if context else 0.0,
                     lastEncodeMs=round(num("encode_ms"), 1), lastFillMs=round(fill_ms, 1))

    def _settings_shown(self) -> dict:
        """The effective settings as the user writes them, the shared-core token hidden."""
        shown = settings_mod.to_editor_json(self.settings)
        if shown["core"]["token"]:
            shown["core"]["token"] = "<set>"
        return shown

    async def status(self) -> dict:
        core: dict = {"state": self.link.state.value}
        if self.link.error:
            core["error"] = self.link.error
        if self.link.state is LinkState.READY:
            try:
                conn = await asyncio.wait_for(self.link.connection(), timeout=1)
                core.update(await asyncio.wait_for(conn.status(), timeout=5))
            except Exception as exc:  # e.g. a SIGSTOPped core: connected, never "ready"
                core["state"], core["error"] = "unresponsive", str(exc) or type(exc).__name__
        info = core.get("info") if isinstance(core.get("info"), dict) else {}
        sched = core.get("scheduler") if isinstance(core.get("scheduler"), dict) else {}
        summary = self.stats.summary()
        summary["counters"]["superseded"] = self.latest.superseded
        summary["counters"]["offscreen"] = self.focus.dropped
        return {
            "server": {"name": "diffill", "version": VERSION, "encoding": self.encoding, "documents": len(self.docs)},
            "core": core,
            "model": info.get("model"),
            "device": info.get("device"),
            "weights": info.get("weights"),
            "queue": {"inFlight": self.latest.in_flight(), "core": sched.get("waiting"), "active": sched.get("active")},
            **summary,
            "cache": {"hits": self.cache.hits, "misses": self.cache.misses},
            "documents": [{"uri": uri, **d, **self.windows.summary(uri)} for uri, d in self.doc_stats.items()],
            "warmups": {"started": self.windows.warmups, "finished": self.windows.warmed},
            "settings": self._settings_shown(),
        }
