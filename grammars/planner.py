"""The span planner: what to fill at the cursor, and the text around the holes.

Owns the rules that turn (document, cursor, selection) into a FillPlan (defined in
fillplan.py, re-exported here as the contract names it): mid-line -> rest of the line; an empty line in a body or after a block opener
-> a block; an empty body -> the body; a placeholder or marker at the cursor -> replace
it; a selection -> regenerate it; mid-identifier, strings and comments -> None. On the
keystroke path it looks only at the cursor's line, its neighbours and the tree path to
the cursor (queries restricted to a byte range), never at the whole file. Must not
know tokens, models or LSP types.
"""

from __future__ import annotations

import logging
import re

from grammars import budgets, queries
from grammars.document import MAX_PARSE_NESTING, Document, decode
from grammars.fillplan import KINDS, MODES, FillPlan, StopRules, line_stop, model_line_start
from grammars.holes import DEFAULT_MARKER, hole_at
from grammars.positions import check_encoding, line_break, line_end
from grammars.scope import Scope, blank_line_scope
from grammars.text import guess_indent_unit, indent_width, is_ident_char, leading_ws, scanner_for

log = logging.getLogger(__name__)

__all__ = ["FillPlan", "StopRules", "KINDS", "MODES", "plan", "plan_at", "split_segments", "with_plan_context", "assemble"]
# Lines looked at around the cursor to guess the indentation unit.
_INDENT_WINDOW = 64
_PY_BODY_HEADER = re.compile(r"^\s*(async\s+def|def|class)\b")
_STRING_ESCAPES = {"interpolation", "template_substitution", "format_expression"}
# Ancestors of the cursor's leaf that in_string_or_comment inspects (see there).
_ANCESTORS_LOOKED_AT = 6
# No code nests this deep; a cursor deeper than this is in a pathological document (50k
# nested brackets in issue 17), where planning, post-processing's reparse and a fill
# would cost seconds for nothing: it gets no completion.
MAX_PLAN_DEPTH = 256


def plan(doc: Document, line: int, character: int, encoding: str = "utf-16",
         selection: tuple[tuple[int, int], tuple[int, int]] | None = None,
         marker: str | None = DEFAULT_MARKER) -> FillPlan | None:
    """The plan at the cursor, or None where completing makes no sense.

    Raises ValueError only for an unknown `encoding` (a programmer error); anything the
    document's content can cause ends as None and a log line.
    """
    check_encoding(encoding)
    off = doc.offset_at(line, character, encoding)
    if off is None:
        return None
    return plan_at(doc, off, marker=marker, selection=selection, encoding=encoding)


def plan_at(doc: Document, off: int, marker: str | None = DEFAULT_MARKER,
            selection: tuple[tuple[int, int], tuple[int, int]] | None = None,
            encoding: str = "utf-16") -> FillPlan | None:
    """`plan` for a cursor already converted to a byte offset of doc.source (the server
    converts an editor position once per request). `marker` is the user's hole marker;
    `selection` is in editor positions of `encoding`."""
    check_encoding(encoding)
    if not 0 <= off <= len(doc.source):
        return None
    try:
        return _plan(doc, off, encoding, selection, marker)
    except Exception:  # keep the editor alive on any surprise in a broken tree
        log.exception("planner failed at byte %s", off)
        return None


def _plan(doc: Document, off: int, encoding: str, selection, marker: str | None) -> FillPlan | None:
    if selection is not None:
        sel = _selection_plan(doc, selection, encoding)
        if sel is not None:
            return sel
    _, ls, le = doc.line_of(off)
    before, after = line_context(doc, ls, off, off, le)

    hole = hole_at(doc, off, marker)
    if hole is not None:
        return hole
    if before and after and is_ident_char(before[-1]) and is_ident_char(after[0]):
        return None  # mid-identifier with text to the right
    if doc.too_deep:  # not parsed at all (document.MAX_PARSE_NESTING): same policy
        log.info("no completion at byte %d: brackets nest deeper than %d levels", off, MAX_PARSE_NESTING)
        return None
    if doc.tree is not None and too_deep(doc, off):
        log.info("no completion at byte %d: nested deeper than %d levels", off, MAX_PLAN_DEPTH)
        return None
    if doc.tree is not None and in_string_or_comment(doc, off):
        return None

    opener = doc.lang.opener if doc.lang else None
    if not before.strip() and not after.strip():
        return _block_plan(doc, off, before, leading="")
    if opener and not after.strip() and before.rstrip().endswith(opener):
        return _block_plan(doc, off, before, leading="\n")
    if (opener == "{" and before.rstrip().endswith("{") and after.lstrip().startswith("}")
            and _target_at(doc, off, ("body", "block")) != "line"):  # not `${|}` or `= {|}`
        return _block_plan(doc, off, before, leading="\n", trailing="\n")
    return _line_plan(doc, off, before, after)


def line_context(doc: Document, ls: int, start: int, end: int, le: int) -> tuple[str, str]:
    """The text of the line before `start` and after `end`, each clipped to
    LINE_CONTEXT_CHARS characters next to the span."""
    window = budgets.LINE_CONTEXT_CHARS * 4  # bytes: at most 4 per character
    before = decode(doc.source[max(ls, start - window):start])[-budgets.LINE_CONTEXT_CHARS:]
    after = decode(doc.source[end:min(le, end + window)])[: budgets.LINE_CONTEXT_CHARS]
    return before, after


def _line_plan(doc: Document, off: int, before: str, after: str) -> FillPlan:
    scan = scanner_for(doc.lang)
    return FillPlan(off, off, "insert", "line", budgets.LINE_BUDGET, leading_ws(before),
                    line_stop(scan, before, after), target=_target_at(doc, off))


def _block_plan(doc: Document, off: int, before: str, leading: str, trailing: str = "") -> FillPlan:
    line_no = doc.position_at(off, "utf-8")[0]
    prev_no, prev = _neighbour(doc, line_no, -1)
    _, nxt = _neighbour(doc, line_no, +1)
    opener = doc.lang.opener if doc.lang else ":{"
    offside = doc.lang is None or doc.lang.offside
    unit = indent_unit(doc, line_no)
    eol = _eol(doc, line_no)
    if leading:  # cursor at the end of the opener line itself: a block the line opens
        prev_ws = leading_ws(before)
        scope = Scope(prev_ws + unit, (prev_ws + unit,), False, True)
        leading, trailing = eol + scope.indent, (eol + prev_ws if trailing else "")
    else:
        above = _lines_near(doc, line_no, -1)
        scope = blank_line_scope(above, [nxt] if nxt is not None else [], before, opener,
                                 bool(doc.lang is not None and doc.lang.offside), unit, prev_no == line_no - 1)
    indent = scope.indent
    empty_scope = bool(trailing) or scope.opens and (
        nxt is None or indent_width(leading_ws(nxt)) < indent_width(indent) or nxt.strip().startswith("}"))
    header = before if leading else (prev or "")
    if doc.lang is not None and doc.lang.offside and not leading and _is_docstring(header):
        # `def f():` / docstring / cursor: the body holds only its docstring so far.
        header = _neighbour(doc, prev_no, -1)[1] or ""
        empty_scope = nxt is None or indent_width(leading_ws(nxt)) < indent_width(indent)
    is_body = empty_scope and _is_body(doc, off, header)
    if scope.single_line and not is_body:
        # Between two lines of one scope: one line, which may not leave the scope either.
        stop = StopRules(single_line=True, dedent=offside, min_depth=0)
        return FillPlan(off, off, "insert", "block", budgets.LINE_BUDGET, indent, stop,
                        target="statement", levels=scope.levels if len(scope.levels) > 1 else ())
    stop = StopRules(dedent=offside, min_depth=0)
    budget = budgets.BODY_BUDGET if is_body else budgets.BLOCK_BUDGET
    return FillPlan(off, off, "insert", "block", budget, indent, stop,
                    target="body" if is_body else "block", leading=leading, trailing=trailing,
                    levels=scope.levels if len(scope.levels) > 1 else ())


def _lines_near(doc: Document, line_no: int, step: int) -> list[str]:
    """The non-blank lines above (step -1) or below (+1) within _INDENT_WINDOW lines, nearest first."""
    out = []
    line = line_no + step
    while 0 <= line < doc.line_count and abs(line - line_no) <= _INDENT_WINDOW:
        text = _line_text(doc, line)
        if text.strip():
            out.append(text)
        line += step
    return out


def _eol(doc: Document, line_no: int) -> str:
    """The document's line break at `line_no` (its own, else the nearest line's above)."""
    return line_break(doc.source, doc.line_starts, line_no)


def _is_body(doc: Document, off: int, opener_line: str) -> bool:
    if doc.lang is None or doc.lang.offside:
        return bool(_PY_BODY_HEADER.match(opener_line))
    return _target_at(doc, off, ("body", "block")) == "body"


def _target_at(doc: Document, off: int, names: tuple[str, ...] | None = None) -> str:
    """Name of the smallest infill capture containing `off` (or "line")."""
    if doc.tree is None or doc.lang is None:
        return "line"
    query = queries.load(doc.lang.name, "infill")
    if query is None:
        return "line"
    best = None
    for name, node in queries.captures_in_range(query, doc.tree.root_node, off - 1, off + 1):
        if names is not None and name not in names:
            continue
        if node.start_byte <= off <= node.end_byte and node.type != "comment":
            if best is None or node.end_byte - node.start_byte < best[1].end_byte - best[1].start_byte:
                best = (name, node)
    return best[0] if best else "line"


def too_deep(doc: Document, off: int, limit: int = MAX_PLAN_DEPTH) -> bool:
    """Whether the tree path to `off` is longer than `limit` nodes; costs at most `limit`
    cursor steps, however deep the tree."""
    cursor = doc.tree.root_node.walk()
    for _ in range(limit):
        if cursor.goto_first_child_for_byte(off) is None:
            return False
    return True


def in_string_or_comment(doc: Document, off: int) -> bool:
    """Whether the cursor sits inside a string literal or a comment (not in an
    interpolation such as f"{x}" or `${x}`)."""
    root = doc.tree.root_node
    for probe in {max(off - 1, 0), off}:
        node = root.descendant_for_byte_range(probe, probe)
        # A string or comment is a leaf or sits a few levels above the leaf at the cursor,
        # so only the nearest ancestors are looked at. Walking to the root made this
        # quadratic in nesting depth (Node.parent itself descends from the root): 112 s on
        # 50k nested brackets, with the LSP event loop frozen (issue 17).
        for _ in range(_ANCESTORS_LOOKED_AT):
            if node is None:
                break
            kind = node.type
            inside = node.start_byte < off < node.end_byte
            if kind in _STRING_ESCAPES and inside:
                break
            if "comment" in kind and node.start_byte < off <= node.end_byte:
                closed = doc.source[node.end_byte - 2:node.end_byte] == b"*/"
                if inside or not closed:
                    return True
            if _is_string_type(kind) and inside:
                return True
            node = node.parent
    return False


def _is_string_type(kind: str) -> bool:
    return kind.endswith("string") or kind.endswith("string_literal") or kind in (
        "string_content", "string_fragment", "char_literal", "character_literal", "text_block", "raw_string")


def _neighbour(doc: Document, line_no: int, step: int) -> tuple[int, str | None]:
    """(line, text) of the nearest non-blank line above (step -1) or below (+1);
    (-1, None) when there is none within _INDENT_WINDOW lines."""
    line = line_no + step
    seen = 0
    while 0 <= line < doc.line_count and seen < _INDENT_WINDOW:
        text = _line_text(doc, line)
        if text.strip():
            return line, text
        line += step
        seen += 1
    return -1, None


def _is_docstring(line: str) -> bool:
    body = line.strip()
    return len(body) >= 6 and body[:3] in ('"""', "'''") and body.endswith(body[:3])


def _line_text(doc: Document, line: int) -> str:
    start = doc.line_starts[line]
    return decode(doc.source[start:line_end(doc.source, doc.line_starts, line)])


def indent_unit(doc: Document, line_no: int) -> str:
    """The document's indentation step near `line_no` (guessed from up to 64 lines each side)."""
    lo = max(0, line_no - _INDENT_WINDOW)
    hi = min(doc.line_count, line_no + _INDENT_WINDOW)
    lines = [_line_text(doc, i) for i in range(lo, hi)]
    return guess_indent_unit(lines, budgets.DEFAULT_INDENT)


def _selection_plan(doc: Document, selection, encoding: str) -> FillPlan | None:
    (sl, sc), (el, ec) = selection
    s = doc.offset_at(sl, sc, encoding)
    e = doc.offset_at(el, ec, encoding)
    if s is None or e is None or s == e:
        return None
    s, e = min(s, e), max(s, e)
    text = decode(doc.source[s:e])
    _, ls, _ = doc.line_of(s)
    indent = leading_ws(decode(doc.source[ls:s]) + text)
    estimate = len(text) // budgets.CHARS_PER_TOKEN + budgets.REGENERATE_SLACK
    budget = max(budgets.LINE_BUDGET, min(budgets.MAX_PLAN_BUDGET, estimate))
    if "\n" in text.rstrip("\n"):
        offside = doc.lang is None or doc.lang.offside
        stop = StopRules(dedent=offside, min_depth=0)
        return FillPlan(s, e, "regenerate", "block", budget, indent, stop, target="block")
    _, _, le = doc.line_of(e)
    stop = line_stop(scanner_for(doc.lang), *line_context(doc, ls, s, e, le))
    return FillPlan(s, e, "regenerate", "line", budget, indent, stop, target=_target_at(doc, s))


def split_segments(doc: Document, plans: list[FillPlan]) -> list[str]:
    """The text around the holes: s0 H1 s1 ... Hn sn, so len(plans) + 1 strings.

    Plans must be sorted by position and must not overlap (find_holes returns them so).
    """
    segments = []
    prev = 0
    for p in plans:
        if p.start_byte < prev or p.end_byte < p.start_byte:
            raise ValueError("split_segments: plans must be sorted and must not overlap")
        segments.append(decode(doc.source[prev:p.start_byte]))
        prev = p.end_byte
    segments.append(decode(doc.source[prev:]))
    return segments


def with_plan_context(segments: list[str], plans: list[FillPlan]) -> list[str]:
    """Model-facing segments: each plan's `leading` text ends the segment before its hole
    and its `trailing` text starts the one after, so the model sees the hole exactly where
    `finalize` will put the fill (after `def f():` it fills a body, not a newline). A
    block's indentation on its own line is left to the model (fillplan.model_line_start);
    finalize puts the fill at the scope's indentation."""
    out = list(segments)
    for i, p in enumerate(plans):
        text = out[i] + p.leading
        head, sep, line = text.rpartition("\n")
        out[i] = head + sep + model_line_start(p, line)
        out[i + 1] = p.trailing + out[i + 1]
    return out


def assemble(doc: Document, plans: list[FillPlan], fills: list[str]) -> str:
    """The document text with fills[i] in place of plans[i] (fills already finalized)."""
    if len(fills) != len(plans):
        raise ValueError(f"assemble: {len(plans)} plans but {len(fills)} fills")
    segments = split_segments(doc, plans)
    out = [segments[0]]
    for fill, seg in zip(fills, segments[1:]):
        out.append(fill)
        out.append(seg)
    return "".join(out)
