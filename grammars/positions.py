"""Exact conversions between byte offsets and (line, character) positions.

Owns line-start tables over UTF-8 source bytes and the column units an LSP client may
negotiate: "utf-8" (bytes), "utf-16" (code units, the LSP default) and "utf-32"
(code points). Lines end at "\\n", "\\r\\n" or "\\r", as the LSP specification says.
Must not know trees, languages or documents.
"""

from __future__ import annotations

import bisect
import re

ENCODINGS = ("utf-8", "utf-16", "utf-32")
_EOL = re.compile(rb"\r\n|\r|\n")


def line_starts(source: bytes) -> list[int]:
    """Byte offset at which every line starts; the first is 0."""
    return [0] + [m.end() for m in _EOL.finditer(source)]


def update_line_starts(starts: list[int], new_source: bytes, start: int, old_end: int, new_end: int) -> list[int]:
    """Line starts after source[start:old_end] became new_source[start:new_end].

    Rescans only the edited lines (plus one line either side, so a "\r" + "\n" pair
    split or joined by the edit is seen) and shifts the starts after them; equal to
    line_starts(new_source), which the tests check on random edits.
    """
    delta = new_end - old_end
    first = max(0, bisect.bisect_right(starts, start) - 2)
    last = bisect.bisect_right(starts, old_end) + 1  # index of the first start kept as is
    scan_from = starts[first]
    if last < len(starts):
        scan_to = starts[last] + delta
        tail = [s + delta for s in starts[last + 1:]]
    else:
        scan_to = len(new_source)
        tail = []
    mid = [m.end() for m in _EOL.finditer(new_source, scan_from, scan_to)]
    if last < len(starts) and (not mid or mid[-1] != scan_to):
        mid.append(scan_to)
    return starts[: first + 1] + mid + tail


def line_end(source: bytes, starts: list[int], line: int) -> int:
    """Byte offset of the end of `line`'s content (before its line break)."""
    end = starts[line + 1] if line + 1 < len(starts) else len(source)
    if end > starts[line] and source[end - 1 : end] == b"\n":
        end -= 1
    if end > starts[line] and source[end - 1 : end] == b"\r":
        end -= 1
    return end


def line_break(source: bytes, starts: list[int], line: int) -> str:
    """The line break ending `line` ("\\n", "\\r\\n" or "\\r"); for the last line, the
    nearest earlier line's; "\\n" in a one-line document."""
    for i in range(min(line, len(starts) - 1), max(-1, line - 64), -1):
        if i + 1 < len(starts):
            end = starts[i + 1]
            if source[end - 2:end] == b"\r\n":
                return "\r\n"
            return "\r" if source[end - 1:end] == b"\r" else "\n"
    return "\n"


def _units(ch: str, encoding: str) -> int:
    if encoding == "utf-16":
        return 2 if ord(ch) > 0xFFFF else 1
    return 1  # utf-32: one per code point


def column_to_byte(line_bytes: bytes, character: int, encoding: str) -> int:
    """Byte index in `line_bytes` of LSP column `character` (clamped to the line end).

    A column that falls inside a character (the middle of a UTF-16 surrogate pair or of
    a UTF-8 sequence) moves back to that character's start.
    """
    character = max(0, character)
    if line_bytes.isascii():  # fast path: every unit is one byte in all three encodings
        return min(character, len(line_bytes))
    if encoding == "utf-8":
        col = min(character, len(line_bytes))
        while col > 0 and col < len(line_bytes) and (line_bytes[col] & 0xC0) == 0x80:
            col -= 1
        return col
    text = line_bytes.decode("utf-8", errors="surrogatepass")
    units = 0
    byte = 0
    for ch in text:
        width = _units(ch, encoding)
        if units + width > character:
            return byte
        units += width
        byte += len(ch.encode("utf-8", errors="surrogatepass"))
    return byte


def byte_to_column(line_bytes: bytes, byte: int, encoding: str) -> int:
    """LSP column of byte index `byte` in `line_bytes` (clamped; mid-character rounds down)."""
    byte = max(0, min(byte, len(line_bytes)))
    if encoding == "utf-8" or line_bytes.isascii():
        return byte
    text = line_bytes[:byte].decode("utf-8", errors="ignore")
    if encoding == "utf-32":
        return len(text)
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def check_encoding(encoding: str) -> str:
    enc = encoding.lower().replace("_", "-")
    if enc not in ENCODINGS:
        raise ValueError(f"unknown position encoding {encoding!r}; expected one of {ENCODINGS}")
    return enc


def offset_at(source: bytes, starts: list[int], line: int, character: int, encoding: str = "utf-16") -> int | None:
    """Byte offset of (line, character), or None when the line is out of range.

    A character past the end of its line clamps to the line end, as the LSP
    specification requires.
    """
    enc = check_encoding(encoding)
    if line < 0 or line >= len(starts) or character < 0:
        return None
    start = starts[line]
    end = line_end(source, starts, line)
    return start + column_to_byte(source[start:end], character, enc)


def position_at(source: bytes, starts: list[int], offset: int, encoding: str = "utf-16") -> tuple[int, int]:
    """(line, character) of a byte offset, clamped into the source."""
    enc = check_encoding(encoding)
    offset = max(0, min(offset, len(source)))
    line = bisect.bisect_right(starts, offset) - 1
    start = starts[line]
    end = line_end(source, starts, line)
    return line, byte_to_column(source[start:end], offset - start, enc)


def ts_point(source: bytes, offset: int) -> tuple[int, int]:
    """tree-sitter's (row, byte column) of a byte offset: rows count "\\n" only."""
    row = source.count(b"\n", 0, offset)
    col = offset - (source.rfind(b"\n", 0, offset) + 1)
    return row, col
