"""Byte <-> (line, character) conversions against an obviously-correct reference."""

from __future__ import annotations

import random
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from grammars import positions
from grammars.document import Document

ALPHABET = st.sampled_from(["a", "b", " ", "\t", "é", "中", "😀", "\U0001F600x", "\n", "\r", "\r\n", "ß"])
TEXTS = st.lists(ALPHABET, max_size=40).map("".join)
ENCODINGS = ("utf-8", "utf-16", "utf-32")


def _units(ch: str, enc: str) -> int:
    return {"utf-8": len(ch.encode()), "utf-16": len(ch.encode("utf-16-le")) // 2, "utf-32": 1}[enc]


def ref_lines(text: str) -> list[str]:
    """Line contents, split the way LSP does (\\r\\n, \\r, \\n)."""
    return re.split(r"\r\n|\r|\n", text)


def ref_offset(text: str, line: int, character: int, enc: str) -> int | None:
    lines = ref_lines(text)
    if line >= len(lines):
        return None
    starts = [0] + [m.end() for m in re.finditer(r"\r\n|\r|\n", text)]
    base = len(text[: starts[line]].encode())
    units = 0
    taken = ""
    for ch in lines[line]:
        if units + _units(ch, enc) > character:
            break
        units += _units(ch, enc)
        taken += ch
    return base + len(taken.encode())


def ref_position(text: str, offset_chars: int, enc: str) -> tuple[int, int]:
    before = text[:offset_chars]
    lines = ref_lines(before)
    return len(lines) - 1, sum(_units(ch, enc) for ch in lines[-1])


@settings(max_examples=300, deadline=None)
@given(TEXTS, st.integers(0, 12), st.integers(0, 50), st.sampled_from(ENCODINGS))
def test_offset_at_matches_reference(text, line, character, enc):
    doc = Document(text)
    assert doc.offset_at(line, character, enc) == ref_offset(text, line, character, enc)


@settings(max_examples=300, deadline=None)
@given(TEXTS, st.data(), st.sampled_from(ENCODINGS))
def test_position_at_matches_reference_and_round_trips(text, data, enc):
    doc = Document(text)
    chars = data.draw(st.integers(0, len(text)))
    if text[chars - 1 : chars + 1] == "\r\n":
        chars -= 1  # between \r and \n is not a position
    offset = len(text[:chars].encode())
    pos = doc.position_at(offset, enc)
    assert pos == ref_position(text, chars, enc)
    assert doc.offset_at(*pos, enc) == offset


def test_known_non_ascii_columns():
    doc = Document("a😀b\nx = 'é'\n", "python")
    # 😀 is 4 UTF-8 bytes, 2 UTF-16 units, 1 code point.
    assert doc.offset_at(0, 2, "utf-8") == 1  # inside the emoji: back to its start
    assert doc.offset_at(0, 3, "utf-16") == 5
    assert doc.offset_at(0, 2, "utf-32") == 5
    assert doc.position_at(5, "utf-16") == (0, 3)
    assert doc.position_at(5, "utf-32") == (0, 2)
    assert doc.position_at(5, "utf-8") == (0, 5)
    assert doc.offset_at(1, 99) == len("a😀b\nx = 'é'".encode())  # past the end clamps
    assert doc.offset_at(2, 0) == len(doc.source)  # the empty last line
    assert doc.offset_at(3, 0) is None and doc.offset_at(-1, 0) is None


def test_update_line_starts_matches_full_rescan():
    rng = random.Random(7)
    pieces = [b"a", b"\n", b"\r", b"\r\n", b"xy", "é".encode()]
    for _ in range(5000):
        src = b"".join(rng.choice(pieces) for _ in range(rng.randrange(12)))
        s = rng.randrange(len(src) + 1)
        e = rng.randrange(s, len(src) + 1)
        new = b"".join(rng.choice(pieces) for _ in range(rng.randrange(4)))
        out = src[:s] + new + src[e:]
        fast = positions.update_line_starts(positions.line_starts(src), out, s, e, s + len(new))
        assert fast == positions.line_starts(out), (src, s, e, new)
