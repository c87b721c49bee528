"""From a document and a cursor to ranked fills: plan, cache, core, post-process.

Owns: the orchestration of one completion (grammars plan -> typed-ahead cache ->
context window -> core fill -> grammars finalize -> ranked candidates), the context
window cut around the hole, and the joint fill of every hole of a document.

Must not know: LSP types (results.py converts), pygls, torch.

The context window: the core's exact cache (docs/architecture.md) reuses the encoded
context when a request only appends to the text before the hole, so the start of the
prefix window sits on a coarse grid (a quarter of the window) and then on a line
start: while the user types inside one grid cell the prefix only grows at its end.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from lsp_server.cache import FillCache
from lsp_server.core_link import CoreLink
from lsp_server.settings import Settings

log = logging.getLogger(__name__)

# Default editor tab settings when the request carries none (inline completion
# requests do not); a tab in the scope's indentation switches to tabs.
_TAB_SIZE = 4


@dataclass(frozen=True)
class Candidate:
    text: str  # replaces source[start:end]
    start: int  # byte offsets into the document's utf-8 source
    end: int
    score: float = 0.0


@dataclass
class Outcome:
    candidates: list[Candidate]
    cached: bool = False
    timings: dict[str, float] = field(default_factory=dict)  # plan_ms, core_ms, post_ms
    core_stats: dict = field(default_factory=dict)


def _utf8_start(source: bytes, i: int) -> int:
    """Move ``i`` forward to the first byte of a utf-8 character."""
    while i < len(source) and (source[i] & 0xC0) == 0x80:
        i += 1
    return i


def _utf8_back(source: bytes, i: int) -> int:
    """Move ``i`` back to the first byte of a utf-8 character."""
    while i > 0 and i < len(source) and (source[i] & 0xC0) == 0x80:
        i -= 1
    return i


def prefix_window_start(source: bytes, start: int, prefix_bytes: int) -> int:
    """Byte where the prefix sent to the core begins (grid-aligned, then a line start)."""
    lo = start - prefix_bytes
    if lo <= 0:
        return 0
    grid = max(1, prefix_bytes // 4)
    anchor = -(-lo // grid) * grid  # round up: the window stays within prefix_bytes
    newline = source.find(b"\n", anchor, start)
    return newline + 1 if newline >= 0 else _utf8_start(source, anchor)


def suffix_window_end(source: bytes, end: int, suffix_bytes: int) -> int:
    """Byte where the suffix sent to the core ends (after a newline when one is near)."""
    hi = end + suffix_bytes
    if hi >= len(source):
        return len(source)
    newline = source.rfind(b"\n", end, hi)
    return newline + 1 if newline >= 0 else _utf8_back(source, hi)


def window_segments(source: bytes, start: int, end: int, settings: Settings) -> list[str]:
    """The two segments around one hole, cut to the context window.

    Fast path of ``split_segments(doc, [plan])`` followed by the same cut; the tests
    check it against that reference."""
    lo = prefix_window_start(source, start, settings.context.prefix_bytes)
    hi = suffix_window_end(source, end, settings.context.suffix_bytes)
    return [source[lo:start].decode("utf-8", "replace"), source[end:hi].decode("utf-8", "replace")]


def clip_segments(segments: list[str], settings: Settings) -> list[str]:
    """Cut the outer segments of a multi-hole fill to the context window."""
    out = list(segments)
    first = out[0].encode("utf-8")
    last = out[-1].encode("utf-8")
    lo = prefix_window_start(first, len(first), settings.context.prefix_bytes)
    hi = suffix_window_end(last, 0, settings.context.suffix_bytes)
    out[0] = first[lo:].decode("utf-8", "replace")
    out[-1] = last[:hi].decode("utf-8", "replace")
    return out


def tab_settings(indent: str) -> tuple[int, bool]:
    return _TAB_SIZE, "\t" not in indent


def variants(text: str) -> list[str]:
    """Fills of different lengths from one fill: the whole of it, and its first line."""
    out = [text]
    first = text.split("\n", 1)[0]
    if first.strip() and first != text:
        out.append(first)
    return out


class Filler:
    def __init__(self, link: CoreLink, cache: FillCache) -> None:
        self.link = link
        self.cache = cache

    def from_cache(self, uri: str, doc: Any, line: int, character: int, encoding: str) -> Outcome | None:
        """Fills answered by the typed-ahead cache, without the model; None on a miss."""
        t0 = time.perf_counter()
        cursor = doc.offset_at(line, character, encoding=encoding)
        if cursor is None:
            return None
        hit = self.cache.get(uri, doc.source, cursor)
        if hit is None:
            return None
        cands = [Candidate(t, hit.start, hit.end) for t in hit.texts]
        return Outcome(cands, cached=True, timings={"cache_ms": _ms(t0)})

    async def at_cursor(
        self,
        uri: str,
        doc: Any,
        line: int,
        character: int,
        encoding: str,
        settings: Settings,
        selection: tuple[tuple[int, int], tuple[int, int]] | None = None,
        request_id: str | None = None,
    ) -> Outcome | None:
        """Ranked fills at a cursor from the core; None when there is nothing worth
        completing (no plan, position out of range)."""
        from grammars.planner import plan as make_plan, with_plan_context
        from grammars.postprocess import finalize, score

        t0 = time.perf_counter()
        cursor = doc.offset_at(line, character, encoding=encoding)
        if cursor is None:
            return None
        source: bytes = doc.source
        p = make_plan(doc, line, character, encoding=encoding, selection=selection)
        if p is None:
            return None
        t1 = time.perf_counter()
        budget = max(1, min(int(p.budget), settings.fill.max_tokens))
        # The model sees the hole where finalize puts the fill (after the plan's leading text).
        segments = with_plan_context(window_segments(source, p.start_byte, p.end_byte, settings), [p])
        conn = await self.link.connection()
        reply = await conn.fill(segments, [budget], settings.fill_params(), request_id=request_id or _rid())
        t2 = time.perf_counter()
        raw = reply["texts"][0] if reply.get("texts") else ""
        tab_size, spaces = tab_settings(p.indent)
        scored: list[Candidate] = []
        seen: set[str] = set()
        for v in variants(raw):
            text = finalize(doc, p, v, tab_size=tab_size, insert_spaces=spaces)
            if not text or text in seen:
                continue
            seen.add(text)
            scored.append(Candidate(text, p.start_byte, p.end_byte, float(score(doc, p, text))))
        # Stable sort: equal scores keep the whole fill before its first line.
        scored.sort(key=lambda c: -c.score)
        if selection is None and scored and p.start_byte == cursor:
            self.cache.put(uri, source, cursor, p.end_byte, [c.text for c in scored])
        timings = {"plan_ms": (t1 - t0) * 1000, "core_ms": (t2 - t1) * 1000, "post_ms": _ms(t2)}
        return Outcome(scored, timings=timings, core_stats=dict(reply.get("stats") or {}))

    async def holes(self, doc: Any, plans: list[Any], settings: Settings, request_id: str | None = None) -> list[Candidate]:
        """Fill every planned hole jointly in one core call; one candidate per plan."""
        from grammars.planner import split_segments, with_plan_context
        from grammars.postprocess import finalize

        if not plans:
            return []
        segments = with_plan_context(clip_segments(split_segments(doc, plans), settings), plans)
        budgets = [max(1, min(int(p.budget), settings.fill.max_tokens)) for p in plans]
        conn = await self.link.connection()
        reply = await conn.fill(segments, budgets, settings.fill_params(), request_id=request_id or _rid())
        texts = list(reply.get("texts") or [])
        if len(texts) != len(plans):
            raise ValueError(f"core answered {len(texts)} fills for {len(plans)} holes")
        out = []
        for p, raw in zip(plans, texts):
            tab_size, spaces = tab_settings(p.indent)
            out.append(Candidate(finalize(doc, p, raw, tab_size=tab_size, insert_spaces=spaces), p.start_byte, p.end_byte))
        return out


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000


def _rid() -> str:
    return uuid.uuid4().hex[:12]
