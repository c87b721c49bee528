"""Training spans: AST-aligned holes for the fill-in-the-middle objective.

Owns sample_spans(source, lang, rng): a few non-overlapping spans of a source file,
each a statement, block, body, expression, argument list, parameter list or condition
(the infill capture vocabulary) or "line" (from a point in a line to its end, the
span the planner asks for most while typing). It parses once and then queries only
a one-byte range around each random probe, so it costs about one parse per file, and
it never raises: junk gives []. Must not know tokens, models or torch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from grammars import budgets, queries
from grammars.languages import resolve

log = logging.getLogger(__name__)

# Share of spans that are "rest of a line" rather than a syntax node, so training sees
# the shape of the planner's most common request.
LINE_SPAN_SHARE = 0.25
# Probes per wanted span before giving up (spans may overlap or be too long).
_PROBES_PER_SPAN = 6
DEFAULT_MAX_SPANS = 3


@dataclass(frozen=True)
class Span:
    """source[start:end] (character indices) is the hole; kind names what it is."""

    start: int
    end: int
    kind: str


def sample_spans(source: str, lang, rng, max_spans: int = DEFAULT_MAX_SPANS) -> list[Span]:
    """1..max_spans non-overlapping spans of `source`, sorted by start.

    lang: a Lang, our language name, a languageId or an extension; unknown -> line
    spans only. rng: anything with .random() -> float in [0, 1) (random.Random,
    numpy Generator).
    """
    try:
        if not isinstance(source, str) or not source.strip() or max_spans < 1:
            return []
        data = source.encode("utf-8", errors="surrogatepass")
        want = 1 + int(rng.random() * max_spans)
        found = _sample_bytes(data, resolve(lang), rng, want)
        spans = _to_chars(data, sorted(found))
        return [s for s in spans if source[s.start:s.end].strip()]  # e.g. a lone U+00A0
    except Exception:
        log.exception("sample_spans failed")
        return []


def _sample_bytes(data: bytes, lang, rng, want: int) -> list[tuple[int, int, str]]:
    root = query = None
    if lang is not None:
        root = lang.parser().parse(data).root_node
        query = queries.load(lang.name, "infill")
    spans: list[tuple[int, int, str]] = []
    for _ in range(want * _PROBES_PER_SPAN):
        if len(spans) >= want:
            break
        pos = min(int(rng.random() * len(data)), len(data) - 1)
        if query is None or rng.random() < LINE_SPAN_SHARE:
            span = _line_span(data, pos, rng)
        else:
            span = _node_span(data, root, query, pos, rng)
        if span is None or span[1] - span[0] > budgets.MAX_SPAN_CHARS:
            continue
        if any(span[0] < e and s < span[1] for s, e, _ in spans):
            continue
        spans.append(span)
    return spans


def _line_span(data: bytes, pos: int, rng) -> tuple[int, int, str] | None:
    """From a point between the line's indentation and its end, to the end."""
    ls = data.rfind(b"\n", 0, pos) + 1
    le = data.find(b"\n", pos)
    le = len(data) if le < 0 else le
    if le > ls and data[le - 1:le] == b"\r":
        le -= 1
    body = ls + len(data[ls:le]) - len(data[ls:le].lstrip(b" \t"))
    content_end = ls + len(data[ls:le].rstrip())
    if content_end <= body:
        return None
    start = body + int(rng.random() * (content_end - body))
    while start > body and (data[start] & 0xC0) == 0x80:  # not inside a UTF-8 sequence
        start -= 1
    return (start, content_end, "line")


def _node_span(data: bytes, root, query, pos: int, rng) -> tuple[int, int, str] | None:
    candidates = []
    seen = set()
    for name, node in queries.captures_in_range(query, root, pos, pos + 1):
        if node.id in seen or node.type == "comment" or node.has_error:
            continue
        if node.start_byte <= pos < node.end_byte:
            seen.add(node.id)
            candidates.append((name, node))
    if not candidates:
        return None
    candidates.sort(key=lambda c: (c[1].start_byte, c[1].end_byte, c[0]))  # deterministic order
    name, node = candidates[min(int(rng.random() * len(candidates)), len(candidates) - 1)]
    start, end = node.start_byte, node.end_byte
    if name in ("body", "block") and data[start:start + 1] == b"{" and data[end - 1:end] == b"}":
        start, end = start + 1, end - 1  # fill inside the braces, as the planner does
        inner = data[start:end]
        start += len(inner) - len(inner.lstrip())
        end -= len(inner) - len(inner.rstrip())
    if end <= start:
        return None
    return (start, end, name)


def _to_chars(data: bytes, spans: list[tuple[int, int, str]]) -> list[Span]:
    if data.isascii():
        return [Span(s, e, k) for s, e, k in spans]

    def char_index(b: int) -> int:
        return len(data[:b].decode("utf-8", errors="surrogatepass" if _valid(data[:b]) else "ignore"))

    return [Span(char_index(s), char_index(e), k) for s, e, k in spans]


def _valid(chunk: bytes) -> bool:
    try:
        chunk.decode("utf-8", errors="surrogatepass")
        return True
    except UnicodeDecodeError:
        return False
