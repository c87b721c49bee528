"""An open document: its text, UTF-8 source, line table and incremental tree.

Owns applying LSP-style edits (Tree.edit now, then an incremental reparse from the
old tree when the tree is next read, so a keystroke reparses only what changed and a
burst of edits parses once), the byte <-> (line, character)
conversions for that text, and reparsing a hypothetical edit without mutating the
document (post-processing ranks fills that way), and refusing to parse a document whose
brackets nest pathologically deep (see MAX_PARSE_NESTING). Must not know LSP types or
planning rules: positions are plain (line, character) tuples.
"""

from __future__ import annotations

from itertools import accumulate, chain, count
from operator import sub

import tree_sitter as ts

from grammars import positions
from grammars.languages import Lang, language_for

# Source text may carry lone surrogates (junk files, broken clients); keep them
# round-trippable instead of raising.
_ERRORS = "surrogatepass"

# A document whose brackets nest deeper than this gets no tree (as if its language were
# unknown). Tree-sitter's incremental reparse rebuilds the whole spine from the root to
# an edit, so its cost grows with nesting depth: 50k nested brackets (issue 17) cost
# ~210 ms in tree-sitter per keystroke, and the planner more on top, with the LSP event
# loop blocked. No code nests this deep; the bound sits well above planner.MAX_PLAN_DEPTH
# because brackets in strings and comments are counted too (only paired ones, though).
MAX_PARSE_NESTING = 1024
_BRACKETS = b"()[]{}"
_NOT_BRACKETS = bytes(b for b in range(256) if b not in _BRACKETS)
_STEP = bytes.maketrans(b"([{)]}", b"\x02\x02\x02\x00\x00\x00")  # 2 / 0, less 1 per bracket: +1 / -1
_STEP_BACKWARDS = bytes.maketrans(b"([{)]}", b"\x00\x00\x00\x02\x02\x02")


def encode(text: str) -> bytes:
    return text.encode("utf-8", errors=_ERRORS)


def decode(data: bytes) -> str:
    return data.decode("utf-8", errors=_ERRORS) if _is_valid(data) else data.decode("utf-8", errors="replace")


def bracket_count(data: bytes) -> int:
    return len(data.translate(None, _NOT_BRACKETS))


def _open_depths(steps: bytes) -> list[int]:
    """After each bracket: how many earlier opens are still unclosed, a stray close
    resetting the count (the running minimum of the prefix sum is subtracted)."""
    prefix = list(map(sub, accumulate(steps), count(1)))
    return list(map(sub, prefix, accumulate(chain((0,), prefix), min)))


def nesting_depth(source: bytes) -> int:
    """How many matched bracket pairs (any kind, strings and comments not excluded)
    enclose the most deeply nested point of `source`, in linear time with no Python
    loop. A point counts an open only if a close follows it and a close only if an open
    precedes it, so stray brackets in strings (`c == "("`) do not add up over a file."""
    brackets = source.translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    opens = _open_depths(brackets.translate(_STEP))  # opens[i]: point after bracket i
    closes = _open_depths(brackets[::-1].translate(_STEP_BACKWARDS))[::-1]  # point before bracket i
    return max(0, max(map(min, opens, closes[1:]), default=0))


def _is_valid(data: bytes) -> bool:
    try:
        data.decode("utf-8", errors=_ERRORS)
        return True
    except UnicodeDecodeError:
        return False


class Document:
    """One open file. `tree` is None for languages we cannot parse."""

    def __init__(self, text: str, language_id: str | None = None, path: str | None = None,
                 lang: Lang | None = None) -> None:
        self.language_id = language_id
        self.path = path
        self.lang: Lang | None = lang or language_for(path=path, language_id=language_id)
        self._parser: ts.Parser | None = self.lang.new_parser() if self.lang else None
        self._tree: ts.Tree | None = None
        self._stale = False
        # Bracket nesting as last measured, and bracket bytes inserted or removed since:
        # each changes the depth by at most one, so the document stays on its side of
        # MAX_PARSE_NESTING without a rescan until the drift could carry it across.
        self._nesting = 0
        self._nesting_drift = 0
        self._set_source(encode(text), text)
        self._reparse(None)

    # -- state -------------------------------------------------------------------
    @property
    def language(self) -> str | None:
        """Our language name ("python", "tsx", ...) or None for line-based planning."""
        return self.lang.name if self.lang else None

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = decode(self.source)
        return self._text

    @property
    def too_deep(self) -> bool:
        """Whether this is a parseable language but its brackets nest deeper than
        MAX_PARSE_NESTING, so it has no tree."""
        return self._parser is not None and self._nesting > MAX_PARSE_NESTING

    @property
    def line_count(self) -> int:
        return len(self.line_starts)

    def _set_source(self, source: bytes, text: str | None = None) -> None:
        self.source = source
        self._text = text
        self.line_starts = positions.line_starts(source)
        self._nesting = nesting_depth(source) if self._parser is not None else 0
        self._nesting_drift = 0

    def _track_nesting(self, changed_brackets: int) -> None:
        if self._parser is None or not changed_brackets:
            return
        self._nesting_drift += changed_brackets
        low, high = self._nesting - self._nesting_drift, self._nesting + self._nesting_drift
        if (high <= MAX_PARSE_NESTING) != (low <= MAX_PARSE_NESTING):  # may have crossed
            self._nesting = nesting_depth(self.source)
            self._nesting_drift = 0

    @property
    def tree(self) -> ts.Tree | None:
        """The syntax tree, reparsed incrementally on first access after edits.

        Edits only Tree.edit the old tree; the reparse waits until someone looks, so a
        burst of keystrokes (or a didChange with several changes) costs one parse.
        """
        if self._stale and self._parser is not None:
            self._tree = self._parser.parse(self.source, self._tree)
            self._stale = False
        return self._tree

    def _reparse(self, old_tree: ts.Tree | None) -> None:
        if self._parser is None:
            return
        if self.too_deep:
            self._tree, self._stale = None, False
        elif old_tree is None:
            self._tree = self._parser.parse(self.source)
            self._stale = False
        else:
            self._stale = True

    # -- positions ---------------------------------------------------------------
    def offset_at(self, line: int, character: int, encoding: str = "utf-16") -> int | None:
        """Byte offset of (line, character); None when the line is out of range."""
        return positions.offset_at(self.source, self.line_starts, line, character, encoding)

    def position_at(self, byte_offset: int, encoding: str = "utf-16") -> tuple[int, int]:
        return positions.position_at(self.source, self.line_starts, byte_offset, encoding)

    def line_of(self, byte_offset: int) -> tuple[int, int, int]:
        """(line, line start byte, line content end byte) of a byte offset."""
        line, _ = positions.position_at(self.source, self.line_starts, byte_offset, "utf-8")
        start = self.line_starts[line]
        return line, start, positions.line_end(self.source, self.line_starts, line)

    # -- edits -------------------------------------------------------------------
    def apply_change(self, start: tuple[int, int] | None, end: tuple[int, int] | None, text: str,
                     encoding: str = "utf-16") -> None:
        """Apply one LSP content change; start/end None replace the whole text.

        Positions past the end of the document clamp to its end (clients send such
        ranges after fast typing); a range whose end precedes its start is swapped.
        """
        if start is None or end is None:
            self._set_source(encode(text), text)
            self._reparse(None)
            return
        s = self._clamped_offset(start, encoding)
        e = self._clamped_offset(end, encoding)
        if e < s:
            s, e = e, s
        self.replace_bytes(s, e, encode(text))

    def _clamped_offset(self, pos: tuple[int, int], encoding: str) -> int:
        line, character = int(pos[0]), int(pos[1])
        if line >= self.line_count:
            return len(self.source)
        off = self.offset_at(max(line, 0), max(character, 0), encoding)
        return len(self.source) if off is None else off

    def replace_bytes(self, start: int, end: int, new: bytes) -> None:
        """Replace source[start:end] by `new`, editing and incrementally reparsing the tree."""
        old = self.source
        new_source = old[:start] + new + old[end:]
        if self._tree is not None:  # edit the (possibly stale) tree: edits compose
            self._tree.edit(**edit_args(old, new_source, start, end, start + len(new)))
        self.line_starts = positions.update_line_starts(self.line_starts, new_source, start, end, start + len(new))
        self.source = new_source
        self._text = None
        self._track_nesting(bracket_count(old[start:end]) + bracket_count(new))
        self._reparse(self._tree)

    def reparse_with(self, start: int, end: int, new: bytes) -> tuple[bytes, ts.Tree | None]:
        """Source and tree as they would be after replacing source[start:end] by `new`.

        The document is left untouched: the edit goes to a copy of the tree, and the
        reparse reuses everything outside the edited range.
        """
        new_source = self.source[:start] + new + self.source[end:]
        if self.tree is None or self._parser is None:
            return new_source, None
        tree = self.tree.copy()
        tree.edit(**edit_args(self.source, new_source, start, end, start + len(new)))
        return new_source, self._parser.parse(new_source, tree)


def edit_args(old: bytes, new: bytes, start: int, old_end: int, new_end: int) -> dict:
    """Keyword arguments of tree_sitter.Tree.edit for one byte-range replacement."""
    return {
        "start_byte": start,
        "old_end_byte": old_end,
        "new_end_byte": new_end,
        "start_point": positions.ts_point(old, start),
        "old_end_point": positions.ts_point(old, old_end),
        "new_end_point": positions.ts_point(new, new_end),
    }
