"""Completion at a cursor: what inline completion and the completion list both run.

Owns: the LSP side of a completion around the fill pipeline (``lsp_server.pipeline``):
newest wins per document, the focus rule for bursts, the adaptive debounce, the
typed-ahead cache, short and full context windows (``lsp_server.windows``), the version
check, counters and the feedback ids of what is shown, and what each document's last
fill cost the core (``diffill/status``).

Must not know: how results look on the wire (conversions.py), grammars internals, how the
core is reached (``core_link``), torch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pygls.exceptions import JsonRpcContentModified

from lsp_server import pipeline
from lsp_server.cache import FillCache
from lsp_server.core_link import CORE_ERRORS, CoreUnready
from lsp_server.debounce import Debouncer, Focus, Latest
from lsp_server.documents import OpenDoc, with_selected
from lsp_server.pipeline import Candidate, RankedFills
from lsp_server.windows import Windows

if TYPE_CHECKING:
    from lsp_server.runtime import DiffillServer

log = logging.getLogger(__name__)


@dataclass
class Answer:
    """A completion that got through the pipeline, with the snapshot it is for."""

    entry: OpenDoc
    doc: Any  # the grammars Document the byte offsets refer to
    outcome: RankedFills
    cursor: int
    latency_ms: float
    accept_ids: list[str]  # one per candidate, for the items' diffill.accepted command


class Completion:
    """The completion feature of one server: its per-document state and its requests."""

    def __init__(self, ls: DiffillServer) -> None:
        self.ls = ls
        self.cache = FillCache()
        self.latest = Latest()
        self.focus = Focus()
        self.debouncer = Debouncer()
        self.doc_stats: dict[str, dict] = {}  # per document: what its last fill cost the core (diffill/status)
        self.windows = Windows()  # short window first, the full one warmed (lsp_server.windows)
        self._line_only: set[str] = set()  # documents whose cached fill is a cold request's first line only

    # -- document events ------------------------------------------------------------

    def edited(self, uri: str) -> None:
        """didChange: the fill under way for the old text is wasted work."""
        self.latest.cancel(uri)
        self.focus.edited(uri)

    def forget(self, uri: str) -> None:
        """didClose: everything held for the document."""
        self.latest.cancel(uri)
        self.cache.drop(uri)
        self.debouncer.forget(uri)
        self.focus.forget(uri)
        self.doc_stats.pop(uri, None)
        self.windows.forget(uri)
        self._line_only.discard(uri)

    # -- requests ---------------------------------------------------------------------

    async def complete(self, uri: str, line: int, character: int, *, debounce: bool, doc: Any = None) -> Answer | None:
        """Newest-wins completion at a cursor. Returns None for nothing to offer;
        raises CancelledError when superseded (pygls answers -32800) and
        JsonRpcContentModified when the document changed under a finished fill."""
        ls = self.ls
        entry = ls.usable(uri)
        if entry is None:
            return None
        t0 = time.perf_counter()
        ls.stats.count("requests")
        if debounce and not self.focus.admit(uri):
            # One of a burst of automatic requests for several documents (Neovim 0.12-dev
            # asks for every open buffer): not the one the user is editing (counted as offscreen).
            return None
        self.latest.claim(uri)
        self.debouncer.observe(uri)
        version = entry.version
        doc = doc if doc is not None else entry.doc
        cursor = doc.offset_at(line, character, encoding=ls.encoding)  # the one conversion of this request
        try:
            # Let the request this one superseded run its cancellation first (it tells the
            # core to drop its fill), so a burst never fills the core's per-client queue.
            await asyncio.sleep(0)
            # An invoked request wants the whole fill: not a cold automatic one's first line.
            outcome = self.from_cache(uri, doc, cursor) if debounce or uri not in self._line_only else None
            if outcome is None:
                if debounce:
                    s = ls.settings.debounce
                    await self.debouncer.wait(uri, s.min_ms, s.max_ms)
                # The LSP request id travels to the core, so both logs name the request.
                rid = f"lsp-{ls.protocol.msg_id}"
                outcome = await self.fill_at(uri, doc, cursor, rid, automatic=debounce)
        except asyncio.CancelledError:
            ls.stats.count("cancelled")
            raise
        except CoreUnready:  # the start failure was told once already
            ls.stats.count("unready")
            return None
        except CORE_ERRORS as exc:
            ls.stats.count("errors")
            ls.tell_once(f"core-error:{type(exc).__name__}", f"diffill: completion failed: {exc}")
            return None
        finally:
            self.latest.release(uri)
        if entry.version != version or ls.docs.get(uri) is not entry:
            ls.stats.count("stale")
            raise JsonRpcContentModified("document changed while filling")
        if outcome is None or not outcome.candidates:
            # noPlan: the planner saw nothing worth completing; emptyFill: post-processing
            # cut the model's fill to nothing
            ls.stats.count("noPlan" if outcome is None else "emptyFill")
            return None
        return self._answered(entry, doc, outcome, cursor, (time.perf_counter() - t0) * 1000)

    def _answered(self, entry: OpenDoc, doc: Any, outcome: RankedFills, cursor: int, latency: float) -> Answer:
        """Counted, timed, logged and given feedback ids: what the handlers convert."""
        stats, uri = self.ls.stats, entry.uri
        stats.count("answered")
        stats.latency(latency)
        for name, ms in outcome.timings.items():
            stats.timing(name, ms)
        if outcome.cached:
            stats.count("cacheHits")
        # Every item gets its own id, cached ones too; a cached fill is the rest of the
        # one the user is typing into, so it does not dismiss that one.
        accept_ids = self.ls.feedback.shown(uri, entry.language_id, [c.text for c in outcome.candidates], latency,
                                            continues=outcome.cached)
        log.info("fill uri=%s cached=%s latency_ms=%.1f %s", uri, outcome.cached, latency,
                 " ".join(f"{k}={v:.1f}" for k, v in outcome.timings.items()))
        return Answer(entry, doc, outcome, cursor, latency, accept_ids)

    async def complete_with_selected(self, uri: str, start: tuple[int, int], end: tuple[int, int], text: str,
                                     *, debounce: bool) -> Answer | None:
        """``complete`` as if the editor's selected completion item (``text`` over
        start..end) were applied: the fill continues it (LSP 3.18 selectedCompletionInfo)."""
        entry = self.ls.usable(uri)
        shadow = with_selected(entry, start, end, text, self.ls.encoding) if entry is not None else None
        if shadow is None:
            return None
        doc, (line, character) = shadow
        return await self.complete(uri, line, character, debounce=debounce, doc=doc)

    def from_cache(self, uri: str, doc: Any, cursor: int | None) -> RankedFills | None:
        """Fills the typed-ahead cache answers without the model; None on a miss."""
        t0 = time.perf_counter()
        hit = self.cache.get(uri, doc.source, cursor) if cursor is not None else None
        if hit is None:
            return None
        cands = [Candidate(t, hit.start, hit.end) for t in hit.texts]
        return RankedFills(cands, cached=True, timings={"cache_ms": (time.perf_counter() - t0) * 1000})

    async def fill_at(self, uri: str, doc: Any, cursor: int | None, request_id: str,
                      automatic: bool = False) -> RankedFills | None:
        """The pipeline's fill at the cursor; what it answers at the cursor is cached for
        the keystrokes that type it."""
        if cursor is None:
            return None
        settings = self.ls.settings
        # An automatic request on a cold window answers one line: the ghost text comes in
        # the time of a line, and the block follows once the full window is warm.
        outcome = await pipeline.fill_at(self.ls.link, doc, cursor, settings, request_id=request_id,
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
        settings = self.ls.settings
        c = settings.context
        if not c.cold_prefix_bytes or c.cold_prefix_bytes >= c.prefix_bytes or not self.ls.link.device().startswith("cpu"):
            return None

        def choose(plan: Any) -> int | None:
            return None if self.windows.holds(uri, pipeline.window_key(doc, plan, settings)) else c.cold_prefix_bytes

        return choose

    def _grow_window(self, uri: str, doc: Any, outcome: RankedFills) -> None:
        """After a fill: a full-window one leaves that window in the core; a short one has
        the full window warmed in the background for the next request."""
        plan, settings = outcome.plan, self.ls.settings
        if plan is None:
            return
        key = pipeline.window_key(doc, plan, settings)
        if uri in self.doc_stats:
            self.doc_stats[uri]["lastWindow"] = "short" if outcome.short_window else "full"
        if not outcome.short_window:
            self.windows.hold(uri, key)
            return
        segments = pipeline.segments_at(doc, plan, settings)
        budget, params = pipeline.budget_for(plan, settings), settings.fill_params()
        link = self.ls.link
        self.windows.warm(uri, key, lambda: link.warm(segments, budget, params))

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
