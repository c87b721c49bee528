"""The scope of a hole on a blank line, read from the lines around it.

Owns where a fill typed on an empty line belongs: its indentation (the editor's
whitespace if it put some, else the block the surrounding lines say the line is in,
never the cursor's column 0), the shallower indentations the fill's first line may
take instead (the model's choice, for a column-0 cursor at the end of a nested block),
the floor below which a later line has left the scope, and whether the hole is one line
(between two lines of one scope) or a block (after an opener, in an empty scope, at the
end of a scope). Pure functions of text lines: must not know trees, plans or models.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from grammars.text import indent_width, leading_ws

_PY_DEF = re.compile(r"^\s*(async\s+def|def|class)\b")
_CLOSERS = ")]}"


@dataclass(frozen=True)
class Scope:
    indent: str  # where the first line goes unless the model picks one of `levels`
    levels: tuple[str, ...]  # indentations the first line may take (indent included), deepest first
    single_line: bool  # the hole is one line: it sits between two lines of its scope
    opens: bool  # the line above opens a block the hole starts

    @property
    def floor(self) -> str:
        """The shallowest indentation the fill may reach: a later line below it left the scope."""
        return min(self.levels, key=indent_width) if self.levels else self.indent


def blank_line_scope(above: list[str], below: list[str], before: str, opener: str, offside: bool,
                     unit: str, adjacent: bool) -> Scope:
    """The scope of a blank line.

    above/below: the nearest non-blank lines above (nearest first) and below; before:
    the whitespace the editor put before the cursor; opener: the characters that open
    a block at a line's end; adjacent: no blank line between the line above and the
    cursor's. A column-0 cursor right under a function's last line continues that
    function (Python: the model may dedent it to an enclosing block of the function,
    never out of it); separated from it by blank lines and followed by module-level
    code it is at module level.
    """
    prev = above[0] if above else None
    nxt = below[0] if below else None
    prev_ws = leading_ws(prev or "")
    opens = bool(prev) and prev.rstrip()[-1:] in opener
    levels: tuple[str, ...] = ()
    if before:  # the editor already indented the line: trust its column
        indent = before
    elif opens:
        indent = prev_ws + unit
    elif offside and prev_ws:
        inside = adjacent or (nxt is not None and indent_width(leading_ws(nxt)) > 0)
        indent = prev_ws if inside else ""
        if inside:
            levels = enclosing_levels(above)
    elif offside:
        indent = ""
    else:
        indent = prev_ws
    scope = Scope(indent, levels or (indent,), False, opens)
    end = nxt is None or indent_width(leading_ws(nxt)) < indent_width(scope.floor) or (
        not offside and nxt.lstrip()[:1] in _CLOSERS)
    # Module-level blank lines start definitions more often than single statements.
    return Scope(indent, scope.levels, bool(indent) and not (opens or end), opens)


def enclosing_levels(above: list[str]) -> tuple[str, ...]:
    """Indentations a line right under above[0] may take, deepest first: above[0]'s, then
    each enclosing block's, down to the body of the innermost function or class (or the
    shallowest indented block when there is none); never module level."""
    levels = [leading_ws(above[0])]
    for line in above[1:]:
        ws = leading_ws(line)
        if indent_width(ws) >= indent_width(levels[-1]):
            continue
        if _PY_DEF.match(line):
            break  # the body of this def is the floor
        if not ws:
            break
        levels.append(ws)
    return tuple(levels)


def pick_level(levels: tuple[str, ...], indent: str, model_ws: str, tab_size: int = 4) -> str:
    """The indentation of a fill's first line: one of `levels` if the model's own leading
    whitespace matches it, else `indent`."""
    want = indent_width(model_ws, tab_size)
    for level in levels:
        if indent_width(level, tab_size) == want:
            return level
    return indent
