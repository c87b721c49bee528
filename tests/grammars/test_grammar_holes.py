"""Placeholder and marker holes per language (fixtures/holes/), segments, assembly."""

from __future__ import annotations

import pytest

from grammar_fixtures import fixture_files, parse_fixture, words
from grammars.document import Document
from grammars.holes import DEFAULT_MARKER, find_holes
from grammars.planner import assemble, plan, split_segments

FILES = fixture_files("holes")


def test_every_language_has_a_holes_fixture():
    from grammars.languages import LANGUAGE_NAMES, language_for

    assert {language_for(path=p.name).name for p in FILES} == set(LANGUAGE_NAMES)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_holes_fixture(path):
    text, cases = parse_fixture(path)
    doc = Document(text, path=str(path))
    want = []
    for case in cases:
        start = doc.offset_at(case.line, case.col, "utf-32")
        end = doc.offset_at(case.line, case.end_col, "utf-32")
        want.append((start, end, words(case.expect)[1]))
    got = [(h.start_byte, h.end_byte, h.kind) for h in find_holes(doc)]
    assert got == sorted(want)
    assert all(h.mode == "replace" and h.target == "hole" for h in find_holes(doc))


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_planner_replaces_the_hole_under_the_cursor(path):
    text, _ = parse_fixture(path)
    doc = Document(text, path=str(path))
    for hole in find_holes(doc):
        for off in (hole.start_byte, (hole.start_byte + hole.end_byte) // 2, hole.end_byte):
            line, col = doc.position_at(off)
            p = plan(doc, line, col)
            assert p is not None and (p.start_byte, p.end_byte, p.mode) == (hole.start_byte, hole.end_byte, "replace")


def test_segments_and_assembly_round_trip():
    text = "def f(x):\n    <|fill|>\n\ndef g():\n    pass\n\ny = <|fill|>\n"
    doc = Document(text, "python")
    holes = find_holes(doc)
    assert [h.kind for h in holes] == ["block", "block", "line"]
    segments = split_segments(doc, holes)
    assert len(segments) == len(holes) + 1
    assert segments[0] == "def f(x):\n    " and segments[-1] == "\n"
    originals = [doc.source[h.start_byte:h.end_byte].decode() for h in holes]
    assert assemble(doc, holes, originals) == text
    filled = assemble(doc, holes, ["return x", "return 1", "2"])
    assert filled == "def f(x):\n    return x\n\ndef g():\n    return 1\n\ny = 2\n"


def test_custom_marker_and_no_placeholders():
    doc = Document("x = [[HOLE]]\ndef f():\n    pass\n", "python")
    holes = find_holes(doc, marker="[[HOLE]]", placeholders=False)
    assert [(h.start_byte, h.end_byte) for h in holes] == [(4, 12)]
    assert len(find_holes(doc, marker=None)) == 1


def test_markers_in_unknown_language_and_non_ascii():
    doc = Document("naïve = <|fill|> # ünïcode <|fill|>\n", language_id="plaintext")
    assert doc.tree is None
    holes = find_holes(doc)
    assert len(holes) == 2
    for h in holes:
        assert doc.source[h.start_byte:h.end_byte].decode() == DEFAULT_MARKER
    assert split_segments(doc, holes) == ["naïve = ", " # ünïcode ", "\n"]


def test_split_segments_rejects_unsorted_plans():
    doc = Document("a <|fill|> b <|fill|>\n", "python")
    holes = find_holes(doc)
    with pytest.raises(ValueError, match="sorted"):
        split_segments(doc, holes[::-1])
