"""Explicit holes: `<|fill|>` markers and each language's placeholder bodies.

Owns the default marker, turning a marker or a placeholder node (`pass`, `...`,
`todo!()`, `panic("TODO")`, ...; see queries/<lang>/holes.scm) into a replace
FillPlan, and finding every hole of a document for multi-span fill. Must not know
tokens or LSP types.
"""

from __future__ import annotations

import tree_sitter as ts

from grammars import budgets, queries
from grammars.document import Document, decode, encode
from grammars.fillplan import FillPlan, StopRules, line_stop
from grammars.text import leading_ws, scanner_for

DEFAULT_MARKER = "<|fill|>"


def find_holes(doc: Document, marker: str | None = DEFAULT_MARKER, placeholders: bool = True) -> list[FillPlan]:
    """Every hole of the document, sorted and non-overlapping.

    Markers are found as text (they rarely parse); placeholders by the language's
    holes query over the whole tree. A placeholder inside another hole is dropped.
    """
    spans: list[tuple[int, int, str]] = []
    if marker:
        needle = encode(marker)
        at = doc.source.find(needle)
        while at >= 0:
            spans.append((at, at + len(needle), "marker"))
            at = doc.source.find(needle, at + len(needle))
    if placeholders and doc.tree is not None and doc.lang is not None:
        query = queries.load(doc.lang.name, "holes")
        if query is not None:
            for node in _hole_nodes(query, doc.tree.root_node):
                spans.append((node.start_byte, node.end_byte, "placeholder"))
    # Outermost first, then drop anything overlapping an already kept hole.
    spans.sort(key=lambda s: (s[0], -(s[1] - s[0])))
    kept: list[tuple[int, int, str]] = []
    for span in spans:
        if kept and span[0] < kept[-1][1]:
            continue
        kept.append(span)
    return [hole_plan(doc, s, e) for s, e, _ in kept]


def _hole_nodes(query, root, start: int | None = None, end: int | None = None):
    cursor = ts.QueryCursor(query)
    if start is not None:
        cursor.set_byte_range(max(0, start), max(start + 1, end))
    return cursor.captures(root).get("hole", [])


def hole_at(doc: Document, off: int, marker: str | None = DEFAULT_MARKER) -> FillPlan | None:
    """The hole the cursor touches, looking only at its line and the tree near it."""
    _, ls, le = doc.line_of(off)
    if marker:
        needle = encode(marker)
        at = doc.source.find(needle, max(ls, off - len(needle)), min(le, off + len(needle)))
        if at >= 0 and at <= off <= at + len(needle):
            return hole_plan(doc, at, at + len(needle))
    if doc.tree is None or doc.lang is None:
        return None
    query = queries.load(doc.lang.name, "holes")
    if query is None:
        return None
    for node in _hole_nodes(query, doc.tree.root_node, off - 1, off + 1):
        if node.start_byte <= off <= node.end_byte:
            return hole_plan(doc, node.start_byte, node.end_byte)
    return None


def hole_plan(doc: Document, start: int, end: int) -> FillPlan:
    """A replace plan for source[start:end]: a block if it stands alone on its lines."""
    _, ls, _ = doc.line_of(start)
    _, _, le = doc.line_of(end)
    window = budgets.LINE_CONTEXT_CHARS
    before = decode(doc.source[max(ls, start - 4 * window):start])[-window:]
    after = decode(doc.source[end:min(le, end + 4 * window)])[:window]
    indent = leading_ws(decode(doc.source[ls:min(start, ls + 4 * window)]))
    if not before.strip() and after.strip() in ("", ";"):
        offside = doc.lang is None or doc.lang.offside
        stop = StopRules(dedent=offside, min_depth=0)
        return FillPlan(start, end, "replace", "block", budgets.BODY_BUDGET, indent, stop, target="hole")
    stop = line_stop(scanner_for(doc.lang), before, after)
    return FillPlan(start, end, "replace", "line", budgets.LINE_BUDGET, indent, stop, target="hole")
