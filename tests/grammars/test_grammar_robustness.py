"""Bad input never raises past the planner: empty, huge, junk, half-typed code.

And none of it is swallowed either: ``plan``, ``finalize`` and ``score`` catch any
exception to keep the editor alive and log it, so every test here also fails if such a
log record appears (with ``_plan`` made to raise, every test of this file fails).
"""

from __future__ import annotations

import logging

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grammars.document import Document
from grammars.holes import find_holes
from grammars.planner import plan, split_segments
from grammars.postprocess import finalize

@pytest.fixture(autouse=True)
def nothing_swallowed(caplog):
    """The guards in plan/finalize/score log what they catch: no such record may appear."""
    caplog.set_level(logging.ERROR, logger="grammars")
    yield
    swallowed = [r.getMessage() for r in caplog.get_records("call")  # (caplog.records is teardown's here)
                 if r.name.startswith("grammars") and r.levelno >= logging.ERROR]
    assert not swallowed, swallowed


# caplog is function-scoped: hypothesis reuses it across examples, which is what we want
# (a record from any example fails the test).
_REUSED_FIXTURE = [HealthCheck.function_scoped_fixture]

LANGS = ["python", "javascript", "typescript", "typescriptreact", "go", "rust", "c", "cpp", "java", "plaintext"]


@pytest.mark.parametrize("lang", LANGS)
def test_empty_document(lang):
    doc = Document("", language_id=lang)
    p = plan(doc, 0, 0)
    assert p is None or (p.start_byte, p.end_byte) == (0, 0)
    assert plan(doc, 1, 0) is None and plan(doc, 5, 5) is None
    assert find_holes(doc) == []
    assert split_segments(doc, []) == [""]


def test_one_megabyte_single_line():
    text = "x = [" + ", ".join(str(i % 97) for i in range(260_000)) + "]"
    assert len(text) > 1_000_000
    doc = Document(text, language_id="python")
    p = plan(doc, 0, len(text) // 2)
    assert p is None or p.kind == "line"
    p = plan(doc, 0, len(text))
    assert p is not None and p.kind == "line"
    doc.apply_change((0, 5), (0, 5), "1, ")
    assert doc.text.startswith("x = [1, 0, 1")
    assert finalize(doc, p, "+ [1]\nmore") == "+ [1]"


@pytest.mark.parametrize("lang", LANGS)
def test_binary_junk(lang):
    junk = bytes(range(256)).decode("latin-1") * 20 + "\ud800 \x00 <|fill|> \r\r\n"
    doc = Document(junk, language_id=lang)
    for line in range(0, doc.line_count + 2):
        for col in (0, 1, 7, 500):
            p = plan(doc, line, col)
            if p is not None:
                assert 0 <= p.start_byte <= p.end_byte <= len(doc.source)
                assert isinstance(finalize(doc, p, "junk )]} \x00"), str)
    holes = find_holes(doc)
    assert len(split_segments(doc, holes)) == len(holes) + 1


HALF_TYPED = {
    "python": ["def f(x", "    if x ==", "    return (1 +", "class A(", "x = [1, 2", "for i in range(", "    print('abc"],
    "rust": ["fn f(x: i64", "let y = match x {", "    if x > {", "vec![1, 2"],
    "go": ["func f(x int", "if x {", "fmt.Println(\"abc"],
    "java": ["class A { void f(", "int x = (1 +", "if (x"],
    "typescriptreact": ["const A = () => <div>", "function f(a: numb", "let x: Array<"],
    "cpp": ["int f(int x", "std::vector<int> v{", "#include <"],
}


@pytest.mark.parametrize("lang", sorted(HALF_TYPED))
def test_half_typed_lines(lang):
    for line in HALF_TYPED[lang]:
        for text in (line, line + "\n", "x\n" + line + "\ny\n"):
            doc = Document(text, language_id=lang)
            for ln in range(doc.line_count):
                for col in range(0, len(line) + 2, 3):
                    p = plan(doc, ln, col)
                    if p is not None:
                        assert p.kind in ("line", "block") and p.mode in ("insert", "replace")
                        assert isinstance(finalize(doc, p, "foo(1)\n}\n"), str)


def test_unknown_encoding_is_a_clear_error():
    doc = Document("x\n", language_id="python")
    with pytest.raises(ValueError, match="encoding"):
        plan(doc, 0, 0, encoding="utf-7")


@settings(max_examples=150, deadline=None, suppress_health_check=_REUSED_FIXTURE)
@given(st.text(max_size=120), st.integers(-2, 8), st.integers(-2, 40), st.sampled_from(LANGS))
def test_random_text_and_positions(text, line, col, lang):
    doc = Document(text, language_id=lang)
    p = plan(doc, line, col)
    if p is not None:
        assert 0 <= p.start_byte <= p.end_byte <= len(doc.source)
        assert p.budget > 0
    holes = find_holes(doc)
    assert len(split_segments(doc, holes)) == len(holes) + 1


@settings(max_examples=60, deadline=None, suppress_health_check=_REUSED_FIXTURE)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 12), st.integers(0, 6), st.integers(0, 12),
                          st.sampled_from(["", "x", "(", "\n", "é😀", "\r\n", "<|fill|>"])), max_size=12))
def test_random_edit_sequences_keep_tree_in_sync(edits):
    doc = Document("def f(x):\n    return x\n", language_id="python")
    for sl, sc, el, ec, new in edits:
        doc.apply_change((sl, sc), (el, ec), new)
        fresh = Document(doc.text, language_id="python")
        assert str(doc.tree.root_node) == str(fresh.tree.root_node)
        assert doc.line_starts == fresh.line_starts
        plan(doc, sl, sc)
