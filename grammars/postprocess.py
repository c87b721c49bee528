"""Post-processing of model fills: pure functions of (document, plan, text).

Owns cutting a raw fill where its plan says to stop (newline, dedent below the scope,
a closing bracket that would close the enclosing scope), removing text that repeats
the suffix, re-indenting to the scope and the editor's tab settings, SAFIM-style
syntax-aware truncation (keep the longest line prefix after which the document parses
no worse than before; Gong et al. 2024, "Evaluation of LLMs on Syntax-Aware Code
Fill-in-the-Middle Tasks", section 3.3), and a validity score that ranks candidate
fills. Must not know tokens, models or LSP types; never mutates the document.
"""

from __future__ import annotations

import logging

from grammars.document import Document, decode, encode
from grammars.fillplan import FillPlan, model_line_start
from grammars.holes import DEFAULT_MARKER
from grammars.filters import cut_unreachable, drop_dangling_tail, join_inline, reindent, with_line_breaks
from grammars.planner import indent_unit, line_context
from grammars.positions import line_break
from grammars.scope import pick_level
from grammars.text import BracketScan, indent_width, leading_ws, scanner_for

log = logging.getLogger(__name__)

# How far into the suffix the overlap check looks (lines and bytes).
_OVERLAP_LINES = 8
_SUFFIX_WINDOW = 4096
# Error nodes counted at most (a junk file can have thousands; the count only ranks).
_ERROR_LIMIT = 10_000
# score() weights: a new syntax error outweighs everything else; the length term is
# a tie-breaker that can never outweigh one unbalanced bracket.
_W_NEW_ERROR = 10.0
_W_FIXED_ERROR = 2.0
_W_BRACKET = 1.0
_W_REPEAT = 3.0
_W_LENGTH = 0.001
_EMPTY_SCORE = -100.0


def finalize(doc: Document, plan: FillPlan, text: str, tab_size: int = 4, insert_spaces: bool = True) -> str:
    """The text to put in place of source[plan.start_byte:plan.end_byte].

    Never raises on model output: anything unexpected logs and returns "".
    """
    try:
        return _finalize(doc, plan, text, max(1, int(tab_size)), bool(insert_spaces))
    except Exception:
        log.exception("finalize failed")
        return ""


def _finalize(doc: Document, plan: FillPlan, text: str, tab_size: int, insert_spaces: bool) -> str:
    """The chain: each step is a small function of its own (grammars/filters.py for the
    text-only ones), in this order."""
    scan = scanner_for(doc.lang)
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    cut = text.find(DEFAULT_MARKER)
    if cut >= 0:
        text = text[:cut]
    fresh_line = False  # the fill's first line starts a line the model began itself
    if plan.kind == "block":
        lines = text.split("\n")
        while lines and not lines[0].strip():
            lines.pop(0)
            fresh_line = True
        text = "\n".join(lines)
    lines = apply_stop(plan, text, scan, tab_size)
    if plan.kind == "line":
        _, ls, le = doc.line_of(plan.start_byte)
        before, _ = line_context(doc, ls, plan.start_byte, plan.start_byte, le)
        line = join_inline(before, lines[0] if lines else "")
        line = trim_line_overlap(doc, plan, line, scan).rstrip()
        return _wrap(plan, line) if line.strip() else ""
    render = _renderer(doc, plan, tab_size, insert_spaces)
    if fresh_line and render.model_col is not None:
        render.model_col = 0
    lines = cut_unreachable(lines, scan, render.model_col or 0, tab_size)
    lines = trim_block_overlap(doc, plan, lines)
    lines = drop_dangling_tail(lines, _upcoming(doc, plan))
    if not any(line.strip() for line in lines):
        return ""
    if doc.tree is not None:
        lines = lines[: syntax_cut(doc, plan, lines, render)]
    return render(lines)


def apply_stop(plan: FillPlan, text: str, scan: BracketScan, tab_size: int) -> list[str]:
    """Lines of `text` up to where the plan's stop rules end it (a later line below the
    scope's floor has left the scope)."""
    stop = plan.stop
    text = text[: scan.cut_below(text, stop.min_depth)]
    lines = text.split("\n")
    if stop.single_line:
        lines = lines[:1]
    if stop.dedent:
        scope = indent_width(plan.floor, tab_size)
        for i in range(1, len(lines)):
            if lines[i].strip() and indent_width(leading_ws(lines[i]), tab_size) < scope:
                lines = lines[:i]
                break
    if stop.max_lines is not None:
        lines = lines[: stop.max_lines]
    while len(lines) > 1 and not lines[-1].strip():
        lines.pop()
    return lines


def trim_line_overlap(doc: Document, plan: FillPlan, fill: str, scan: BracketScan) -> str:
    """Drop the end of a one-line fill that repeats the start of the rest of the line,
    when that leaves the line's brackets no less balanced (`f(|)` + "x)" -> "x", but
    `f(|)` + "g()" stays)."""
    _, ls, _ = doc.line_of(plan.start_byte)
    _, _, le = doc.line_of(plan.end_byte)
    before, rest = line_context(doc, ls, plan.start_byte, plan.end_byte, le)
    best_k, best_bad = 0, scan.imbalance(before + fill + rest)
    for k in range(1, min(len(fill), len(rest)) + 1):
        if fill.endswith(rest[:k]):
            bad = scan.imbalance(before + fill[:-k] + rest)
            if bad <= best_bad:
                best_k, best_bad = k, bad
    return fill[: len(fill) - best_k] if best_k else fill


def trim_block_overlap(doc: Document, plan: FillPlan, lines: list[str]) -> list[str]:
    """Drop trailing fill lines that repeat the next lines of the suffix (ignoring
    whitespace). Lines of closing brackets alone are left to the bracket rule: a
    fill may legitimately end with a `}` of its own."""
    upcoming = _upcoming(doc, plan)
    kept = [i for i, line in enumerate(lines) if line.strip()]
    for k in range(min(len(kept), len(upcoming)), 0, -1):
        tail = [lines[i].strip() for i in kept[-k:]]
        if tail == upcoming[:k] and any(ch.isalnum() for line in tail for ch in line):
            return lines[: kept[-k]] if kept[-k] > 0 else [""]
    return lines


def _upcoming(doc: Document, plan: FillPlan) -> list[str]:
    """The next non-blank lines of the suffix (stripped), the rest of the hole's line first."""
    suffix = decode(doc.source[plan.end_byte:plan.end_byte + _SUFFIX_WINDOW])
    return [s.strip() for s in suffix.replace("\r\n", "\n").replace("\r", "\n").split("\n") if s.strip()][:_OVERLAP_LINES]


class _Renderer:
    """lines -> final text: the first line at the scope's indentation (one of the plan's
    levels if the model chose it), later lines shifted with it and re-written in the
    editor's tab settings, the document's line breaks, then plan.leading/trailing."""

    def __init__(self, doc: Document, plan: FillPlan, tab_size: int, insert_spaces: bool) -> None:
        line_no, ls, _ = doc.line_of(plan.start_byte)
        self.plan, self.tab_size, self.insert_spaces = plan, tab_size, insert_spaces
        self.before = decode(doc.source[ls:plan.start_byte])
        self.eol = line_break(doc.source, doc.line_starts, line_no)
        self.unit = indent_width(indent_unit(doc, line_no), tab_size)
        self.scan = scanner_for(doc.lang)
        self.ends_line = plan.mode == "regenerate" and doc.source[plan.start_byte:plan.end_byte].endswith(b"\n")
        # What the model saw on the hole's line before it: the plan's leading text ends it.
        seen = plan.leading.rsplit("\n", 1)[-1] if "\n" in plan.leading else self.before + plan.leading
        seen = model_line_start(plan, seen)
        self.model_col = indent_width(seen, tab_size) if not seen.strip() else None

    def first_indent(self, first: str) -> str:
        """What goes before the first line's text (after the cursor's own whitespace)."""
        plan, before = self.plan, self.before
        if plan.leading or before.strip():
            return ""
        level = pick_level(plan.levels, plan.indent, before + leading_ws(first), self.tab_size) \
            if plan.levels and not before else plan.indent
        return level[len(before):] if level.startswith(before) else ""

    def __call__(self, lines: list[str]) -> str:
        plan = self.plan
        lead = self.first_indent(lines[0]) if lines else self.first_indent("")
        actual = None
        if self.model_col is not None:
            actual = indent_width(plan.indent if plan.leading else self.before + lead, self.tab_size)
        model = None if self.model_col is None or not lines else self.model_col + indent_width(leading_ws(lines[0]), self.tab_size)
        out = reindent(lines, model, actual, self.unit, self.scan, self.tab_size, self.insert_spaces)
        if out:
            out[0] = lead + out[0].lstrip(" \t")
        text = with_line_breaks("\n".join(out).rstrip(), self.eol)
        return _wrap(plan, text) + (self.eol if self.ends_line else "")


def _renderer(doc: Document, plan: FillPlan, tab_size: int, insert_spaces: bool) -> _Renderer:
    return _Renderer(doc, plan, tab_size, insert_spaces)


def _wrap(plan: FillPlan, text: str) -> str:
    return plan.leading + text + plan.trailing


def syntax_cut(doc: Document, plan: FillPlan, lines: list[str], render) -> int:
    """How many lines to keep: the most after which the document has no more syntax
    errors than before the fill; failing that, the fewest errors (longest on ties)."""
    base = count_errors(doc.tree.root_node)
    best_n, best_err = len(lines), None
    for n in range(len(lines), 0, -1):
        if not lines[n - 1].strip():
            continue
        errors = _errors_with(doc, plan, render(lines[:n]))
        if errors <= base:
            return n
        if best_err is None or errors < best_err:
            best_n, best_err = n, errors
    return best_n


def _errors_with(doc: Document, plan: FillPlan, fill: str) -> int:
    _, tree = doc.reparse_with(plan.start_byte, plan.end_byte, encode(fill))
    return count_errors(tree.root_node) if tree is not None else 0


def count_errors(node) -> int:
    """ERROR and MISSING nodes under `node`, descending only into subtrees that have
    errors (a valid subtree costs one check, so this is cheap on mostly valid files)."""
    if not node.has_error:
        return 0
    count = 0
    stack = [node]
    while stack and count < _ERROR_LIMIT:
        n = stack.pop()
        if n.is_error or n.is_missing:
            count += 1
        stack.extend(c for c in n.children if c.has_error)
    return count


def score(doc: Document, plan: FillPlan, text: str) -> float:
    """Validity of a (finalized) fill; higher is better. Used to rank candidates.

    New ERROR/MISSING nodes cost most (Python often reports ERROR where MISSING would
    be expected, hence counting both under has_error subtrees), errors a fill removes
    (a marker replaced by code) earn some, then unbalanced brackets and lines that
    repeat the suffix cost, and length breaks ties.
    """
    try:
        if not text.strip():
            return _EMPTY_SCORE
        scan = scanner_for(doc.lang)
        value = 0.0
        if doc.tree is not None:
            delta = _errors_with(doc, plan, text) - count_errors(doc.tree.root_node)
            value -= _W_NEW_ERROR * max(0, delta)
            value += _W_FIXED_ERROR * max(0, -delta)
        closers, openers = scan.net(text)
        value -= _W_BRACKET * (max(0, closers + plan.stop.min_depth) + openers)
        lines = [line for line in text.split("\n") if line.strip()]
        repeats = len(lines) - len(trim_block_overlap(doc, plan, lines)) if lines else 0
        value -= _W_REPEAT * max(0, repeats)
        value += _W_LENGTH * min(len(text.strip()), 500)
        return value
    except Exception:
        log.exception("score failed")
        return _EMPTY_SCORE
