"""Planner rules outside the fixtures, and range-restricted queries against whole-file ones."""

from __future__ import annotations

import random

import pytest
import tree_sitter as ts

from grammar_fixtures import fixture_files, parse_fixture
from grammars import budgets, queries
from grammars.document import Document
from grammars.planner import plan


@pytest.mark.parametrize("path", fixture_files("plan") + fixture_files("holes"), ids=lambda p: p.name)
@pytest.mark.parametrize("purpose", queries.PURPOSES)
def test_range_query_finds_every_capture_at_the_cursor(path, purpose):
    """The planner's two-byte query sees exactly what a whole-file query sees there."""
    doc = Document(parse_fixture(path)[0], path=str(path))
    query = queries.load(doc.lang.name, purpose)
    everything = [(name, n) for name, nodes in ts.QueryCursor(query).captures(doc.tree.root_node).items()
                  if not name.startswith("_") for n in nodes]
    rng = random.Random(path.name)
    for off in [rng.randrange(1, len(doc.source)) for _ in range(60)]:
        want = {(name, n.start_byte, n.end_byte) for name, n in everything if n.start_byte < off < n.end_byte}
        got = {(name, n.start_byte, n.end_byte)
               for name, n in queries.captures_in_range(query, doc.tree.root_node, off - 1, off + 1)
               if n.start_byte < off < n.end_byte}
        assert got == want, off


def test_selection_regenerates():
    doc = Document("total = compute(a, b) + 1\n", language_id="python")
    p = plan(doc, 0, 0, selection=((0, 8), (0, 21)))
    assert (p.mode, p.kind, p.start_byte, p.end_byte) == ("regenerate", "line", 8, 21)
    assert budgets.LINE_BUDGET <= p.budget <= budgets.MAX_PLAN_BUDGET
    empty = plan(doc, 0, 8, selection=((0, 8), (0, 8)))  # an empty selection is a cursor
    assert empty.mode == "insert"
    backwards = plan(doc, 0, 0, selection=((0, 21), (0, 8)))
    assert (backwards.start_byte, backwards.end_byte) == (8, 21)


def test_unknown_language_plans_from_lines():
    doc = Document("step one:\n  do this\n  \nnext thing\n", language_id="markdown")
    p = plan(doc, 2, 2)
    assert (p.kind, p.indent, p.stop.dedent) == ("block", "  ", True)
    p = plan(doc, 3, 10)
    assert p.kind == "line" and p.stop.single_line
    assert plan(doc, 3, 2) is None  # mid-word


def test_object_literal_braces_are_a_line():
    doc = Document("const o = {};\n", language_id="javascript")
    p = plan(doc, 0, 11)
    assert p.kind == "line" and not p.leading


def test_utf16_cursor_after_astral_characters():
    doc = Document("s = '😀😀'\nx = len(\n", language_id="python")
    p = plan(doc, 1, 8)
    assert p.start_byte == len("s = '😀😀'\nx = len(".encode())
    assert plan(doc, 0, 7) is None  # between the emoji: inside the string


def test_line_plan_may_close_brackets_opened_before_the_cursor():
    doc = Document("x = foo(bar(1, \n", language_id="python")
    assert plan(doc, 0, 15).stop.min_depth == -2
    doc = Document("x = foo(bar(1, )\n", language_id="python")
    assert plan(doc, 0, 15).stop.min_depth == -1
