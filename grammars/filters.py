"""Small named filters over a fill's lines, each a pure function testable alone.

Owns the text rules post-processing chains (in the spirit of Tabby's postprocess
filters): cutting code after a statement that leaves its block, dropping a last line
that only starts the suffix's next line, joining an inline fill without doubling the
whitespace before it, re-indenting continuation lines by the same shift as the first
line (so a model that started its first line one column off does not leave every later
line one column off), and the document's line breaks. postprocess.finalize decides the
order. Must not know trees, plans, tokens or models.
"""

from __future__ import annotations

import re

from grammars.text import CLOSERS, BracketScan, indent_width, leading_ws, make_indent

# A statement after which nothing at its own indentation runs (the rest of its block).
_LEAVES = re.compile(r"(return|raise|throw|break|continue)\b")
# Lines that may follow such a statement at its indentation: a closer, another branch of a switch.
_AFTER_LEAVE = re.compile(r"[)\]}]|(case|default)\b")
# Characters before an inline hole after which the fill's leading whitespace is not wanted.
_NO_SPACE_AFTER = "([ \t"


def cut_unreachable(lines: list[str], scan: BracketScan, first_col: int = 0, tab_size: int = 4) -> list[str]:
    """Lines up to the end of the first complete `return`/`raise`/`throw`/`break`/
    `continue` statement whose next line sits at its indentation or deeper (dead code, or
    a second statement the model began: the bare `return` after a `return`).
    `first_col`: the column the first line starts at in the document (its own leading
    whitespace comes on top)."""
    i = 0
    while i < len(lines):
        text = lines[i].strip()
        if not _LEAVES.match(text):
            i += 1
            continue
        col = indent_width(leading_ws(lines[i]), tab_size) + (first_col if i == 0 else 0)
        j, depth = i, _net(scan, lines[i])
        while (depth > 0 or lines[j].rstrip().endswith("\\")) and j + 1 < len(lines):
            j += 1
            depth += _net(scan, lines[j])
        for k in range(j + 1, len(lines)):
            nxt = lines[k].strip()
            if not nxt:
                continue
            if indent_width(leading_ws(lines[k]), tab_size) >= col and not _AFTER_LEAVE.match(nxt):
                return _drop_trailing_blank(lines[:k])
            break
        i = j + 1
    return lines


def drop_dangling_tail(lines: list[str], upcoming: list[str]) -> list[str]:
    """Without the last line when it is a strict start of the suffix's next line (the model
    began to write that line again and stopped: `return` before `return string(runes)`)."""
    kept = [i for i, line in enumerate(lines) if line.strip()]
    if not kept or not upcoming:
        return lines
    last = lines[kept[-1]].strip()
    nxt = upcoming[0].strip()
    if last != nxt and nxt.startswith(last) and any(ch.isalnum() for ch in last):
        return _drop_trailing_blank(lines[: kept[-1]]) if kept[-1] > 0 else [""]
    return lines


def join_inline(before: str, fill: str) -> str:
    """An inline fill without the leading whitespace the text before the hole already
    ends with (`return |` + " a + b" -> "a + b"), or that does not belong after an open
    bracket (`.map(|` + " word => w" -> "word => w")."""
    if before and before[-1] in _NO_SPACE_AFTER and before.strip():
        return fill.lstrip(" \t")
    return fill


def reindent(lines: list[str], model_col: int | None, actual_col: int | None, unit: int, scan: BracketScan,
             tab_size: int = 4, insert_spaces: bool = True) -> list[str]:
    """Lines after the first, re-indented in the document's tab settings and shifted by as
    much as the first line moved (from the column the model wrote it at, `model_col`, to
    the one it lands at, `actual_col`) when that is less than one step and puts at least
    as many of them on the document's indentation grid (multiples of `unit` from the
    first line) as no shift does. Lines inside open brackets (hanging indents) are
    shifted but not counted."""
    if not lines:
        return []
    shift = 0
    # Only a shift smaller than one indentation step is an artifact (a prompt that ends in
    # indentation makes the model start with one more space); a whole step is ambiguous
    # (the model may have indented its first line twice), so the lines stay.
    if model_col is not None and actual_col is not None and 0 < abs(actual_col - model_col) < max(unit, 2):
        shift = actual_col - model_col
        if _on_grid(lines, 0, actual_col, unit, scan, tab_size) > _on_grid(lines, shift, actual_col, unit, scan, tab_size):
            shift = 0
    out = [lines[0]]
    for line in lines[1:]:
        ws = leading_ws(line)
        body = line[len(ws):].rstrip()
        width = max(0, indent_width(ws, tab_size) + shift)
        out.append(make_indent(width, tab_size, insert_spaces) + body if body else "")
    return out


def with_line_breaks(text: str, eol: str) -> str:
    """`text` (with "\\n" breaks) in the document's line breaks."""
    return text if eol == "\n" else text.replace("\n", eol)


def _on_grid(lines: list[str], shift: int, base: int, unit: int, scan: BracketScan, tab_size: int) -> int:
    count, depth = 0, _net(scan, lines[0])
    for line in lines[1:]:
        if line.strip() and depth <= 0 and unit > 0:
            width = indent_width(leading_ws(line), tab_size) + shift
            count += (width - base) % unit == 0
        depth += _net(scan, line)
    return count


def _net(scan: BracketScan, line: str) -> int:
    depth = 0
    for _, ch in scan.events(line):
        depth += -1 if ch in CLOSERS else 1
    return depth


def _drop_trailing_blank(lines: list[str]) -> list[str]:
    while len(lines) > 1 and not lines[-1].strip():
        lines = lines[:-1]
    return lines
