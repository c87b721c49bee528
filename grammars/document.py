"""An open document: its text, UTF-8 source, line table and incremental tree.

Owns applying LSP-style edits (Tree.edit now, then an incremental reparse from the
old tree when the tree is next read, so a keystroke reparses only what changed and a
burst of edits parses once), the byte <-> (line, character)
conversions for that text, and reparsing a hypothetical edit without mutating the
document (post-processing ranks fills that way). Must not know LSP types or planning
rules: positions are plain (line, character) tuples.
"""

from __future__ import annotations

import tree_sitter as ts

from grammars import positions
from grammars.languages import Lang, language_for

# Source text may carry lone surrogates (junk files, broken clients); keep them
# round-trippable instead of raising.
_ERRORS = "surrogatepass"


def encode(text: str) -> bytes:
    return text.encode("utf-8", errors=_ERRORS)


def decode(data: bytes) -> str:
    return data.decode("utf-8", errors=_ERRORS) if _is_valid(data) else data.decode("utf-8", errors="replace")


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
    def line_count(self) -> int:
        return len(self.line_starts)

    def _set_source(self, source: bytes, text: str | None = None) -> None:
        self.source = source
        self._text = text
        self.line_starts = positions.line_starts(source)

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
        if old_tree is None:
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
