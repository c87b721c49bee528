"""One fill, from a document and a request to the final text: the pipeline every caller runs.

Owns: plan (grammars) -> context window -> segments and budgets -> ``core.fill``
through a ``CoreConnection`` -> grammars ``finalize`` -> variants and ranking, for a
cursor (``fill_at``) and for every hole of a document in one core call (``fill_plans``), and
the context window cut around the hole. Three callers use it and nothing else: the
LSP server (a socket client to the core), ``diffill fill`` and ``diffill bench
quality`` (both an in-process engine, ``diffusion_core.serving.local_core.LocalCore``), so the
benchmark measures what users get.

Must not know: LSP types (conversions.py converts), pygls, torch, how the core is reached.
The cursor arrives as a byte offset: callers convert an editor position once.

The context window: the core's exact cache (docs/architecture.md) reuses the encoded
context when a request only appends to the text before the hole, so the start of the
prefix window sits on a coarse grid (a quarter of the window) and then on a line
start: while the user types inside one grid cell the prefix only grows at its end.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from grammars.document import Document, decode
from grammars.fillplan import FillPlan
from grammars.planner import assemble, plan_at, split_segments, with_plan_context
from grammars.postprocess import finalize, score
from lsp_server.core_link import CoreConnection
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
class RankedFills:
    """The ranked candidates of one fill at a cursor, with its plan and what it cost."""

    candidates: list[Candidate]  # best first
    plan: FillPlan | None = None
    cached: bool = False
    timings: dict[str, float] = field(default_factory=dict)  # plan_ms, core_ms, post_ms
    core_stats: dict = field(default_factory=dict)
    short_window: bool = False  # sent with a short prefix window (lsp_server.windows)


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


def budget_for(plan: FillPlan, settings: Settings) -> int:
    """The hole's token budget: the planner's, under the user's cap."""
    return max(1, min(int(plan.budget), settings.fill.max_tokens))


def rank(doc: Document, plan: FillPlan, raw: str) -> list[Candidate]:
    """Finalized variants of one raw fill, best first, empty ones and repeats dropped."""
    tab_size, spaces = tab_settings(plan.indent)
    scored: list[Candidate] = []
    seen: set[str] = set()
    for v in variants(raw):
        text = finalize(doc, plan, v, tab_size=tab_size, insert_spaces=spaces)
        if not text or text in seen:
            continue
        seen.add(text)
        scored.append(Candidate(text, plan.start_byte, plan.end_byte, float(score(doc, plan, text))))
    # Stable sort: equal scores keep the whole fill before its first line.
    scored.sort(key=lambda c: -c.score)
    return scored


def segments_at(doc: Document, plan: FillPlan, settings: Settings) -> list[str]:
    """What the model sees around one hole: the context window, and the hole where
    finalize puts the fill (after the plan's leading text)."""
    return with_plan_context(window_segments(doc.source, plan.start_byte, plan.end_byte, settings), [plan])


def window_key(doc: Document, plan: FillPlan, settings: Settings) -> tuple[int, str]:
    """What names the full context window of a fill at ``plan`` (lsp_server.windows): the
    byte where its prefix window starts and its suffix segment. Typing at the cursor keeps
    both (the prefix grows at its end); a cursor move changes the suffix."""
    lo = prefix_window_start(doc.source, plan.start_byte, settings.context.prefix_bytes)
    return lo, segments_at(doc, plan, settings)[1]


def with_prefix_bytes(settings: Settings, prefix_bytes: int) -> Settings:
    return dataclasses.replace(settings, context=dataclasses.replace(settings.context, prefix_bytes=prefix_bytes))


def stop_spec(plan: FillPlan) -> dict:
    """The planner's stop rule as the core applies it while decoding (engine contract in
    docs/architecture.md): a line hole ends at its newline, a dedenting block at the first
    later line indented less than the hole's scope (``plan.floor``), any fill before a closing bracket that would close
    its enclosing scope (``min_depth``). finalize applies the whole StopRules again, with the
    language's own scanner, to whatever comes back."""
    s = plan.stop
    return {"max_lines": 1 if s.single_line else int(s.max_lines or 0),
            "dedent_below": len(plan.floor) if s.dedent else -1,
            "min_depth": min(int(s.min_depth), 0)}


async def core_fill(core: CoreConnection, segments: list[str], plans: list[FillPlan], settings: Settings,
                    request_id: str | None, on_progress: Callable[[dict], None] | None = None) -> dict:
    """The one call into the core: segments, each plan's budget and stop rule, the user's
    sampler settings. Stopping in the core saves the steps a pretrained coder would spend
    running to its budget (it rarely emits an end token after a FIM middle).
    ``on_progress`` gets the core's heartbeats (protocol docstring), when it sends them."""
    budgets = [budget_for(p, settings) for p in plans]
    more = {"on_progress": on_progress} if on_progress is not None else {}
    return await core.fill(segments, budgets, settings.fill_params(), request_id=request_id or _rid(),
                           stops=[stop_spec(p) for p in plans], **more)


async def fill_at(core: CoreConnection, doc: Document, cursor: int, settings: Settings,
                  selection: tuple[tuple[int, int], tuple[int, int]] | None = None, encoding: str = "utf-16",
                  request_id: str | None = None,
                  short_window: Callable[[FillPlan], int | None] | None = None,
                  cold_one_line: bool = False) -> RankedFills | None:
    """Ranked fills at a cursor (a byte offset into ``doc.source``); None when there is
    nothing worth completing. ``selection`` (editor positions in ``encoding``) regenerates
    the selected text instead. ``short_window(plan)``: the prefix bytes to send instead of
    ``context.prefixBytes`` (None: the full window; lsp_server.windows); with
    ``cold_one_line`` such a short-window fill is also cut to its first line, decoded
    as a line hole (a block's first line is one of its variants anyway)."""
    t0 = time.perf_counter()
    p = plan_at(doc, cursor, marker=settings.hole_marker, selection=selection, encoding=encoding)
    if p is None:
        return None
    t1 = time.perf_counter()
    short = short_window(p) if short_window is not None else None
    if short is not None and cold_one_line and not p.stop.single_line:
        p = dataclasses.replace(p, stop=dataclasses.replace(p.stop, single_line=True))
    segments = segments_at(doc, p, settings if short is None else with_prefix_bytes(settings, short))
    reply = await core_fill(core, segments, [p], settings, request_id)
    t2 = time.perf_counter()
    raw = reply["texts"][0] if reply.get("texts") else ""
    scored = rank(doc, p, raw)
    timings = {"plan_ms": (t1 - t0) * 1000, "core_ms": (t2 - t1) * 1000, "post_ms": _ms(t2)}
    return RankedFills(scored, plan=p, timings=timings, core_stats=dict(reply.get("stats") or {}),
                   short_window=short is not None)


async def fill_plans(core: CoreConnection, doc: Document, plans: list[FillPlan], settings: Settings,
                     request_id: str | None = None,
                     on_progress: Callable[[dict], None] | None = None) -> list[Candidate]:
    """Fill every planned hole in one core call; one candidate per plan, in order
    (its text is empty where the fill post-processed to nothing)."""
    if not plans:
        return []
    segments = with_plan_context(clip_segments(split_segments(doc, plans), settings), plans)
    reply = await core_fill(core, segments, plans, settings, request_id, on_progress)
    texts = list(reply.get("texts") or [])
    if len(texts) != len(plans):
        raise ValueError(f"core answered {len(texts)} fills for {len(plans)} holes")
    out = []
    for p, raw in zip(plans, texts):
        tab_size, spaces = tab_settings(p.indent)
        out.append(Candidate(finalize(doc, p, raw, tab_size=tab_size, insert_spaces=spaces), p.start_byte, p.end_byte))
    return out


def apply(doc: Document, plans: list[FillPlan], candidates: list[Candidate]) -> str:
    """The document's text with each plan's candidate in place; a blank candidate leaves
    its hole as it was, so it can be retried."""
    fills = [c.text if c.text.strip() else decode(doc.source[p.start_byte:p.end_byte])
             for p, c in zip(plans, candidates, strict=True)]
    return assemble(doc, plans, fills)


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000


def _rid() -> str:
    return uuid.uuid4().hex[:12]
