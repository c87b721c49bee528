"""finalize and score: stop rules, suffix overlap, indentation, syntax-aware cuts."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from grammars.document import Document
from grammars.holes import find_holes
from grammars.planner import FillPlan, assemble, plan
from grammars.postprocess import count_errors, finalize, score


def fill_at(text, lang, line, col, fill, **kw):
    doc = Document(text, language_id=lang)
    p = plan(doc, line, col)
    assert p is not None
    out = finalize(doc, p, fill, **kw)
    return out, assemble(doc, [p], [out])


def test_block_stops_at_dedent_below_scope():
    out, _ = fill_at("def f(x):\n    \n", "python", 1, 4, "return x + 1\n\ndef g(y):\n    return y\n")
    assert out == "return x + 1"


def test_block_keeps_nested_indentation():
    out, doc = fill_at("def f(x):\n    \n", "python", 1, 4, "if x:\n        return 1\n    return 2\n")
    assert out == "if x:\n        return 1\n    return 2"
    assert doc == "def f(x):\n    if x:\n        return 1\n    return 2\n"


def test_block_removes_lines_repeating_the_suffix():
    text = "def f(x):\n    \n    return x\n"
    out, _ = fill_at(text, "python", 1, 4, "y = x + 1\n    return x\n")
    assert out == "y = x + 1"


def test_brace_block_stops_at_the_scope_closer():
    out, doc = fill_at("int f(int x) {\n    \n}\n", "c", 1, 4, "return x;\n}\nint g(void) { return 0; }\n")
    assert out == "return x;"
    assert doc == "int f(int x) {\n    return x;\n}\n"


def test_brace_block_keeps_its_own_closers():
    out, _ = fill_at("int f(int x) {\n    \n}\n", "c", 1, 4, "if (x) {\n        return 1;\n    }\n    return 0;\n}")
    assert out == "if (x) {\n        return 1;\n    }\n    return 0;"


def test_inline_empty_body_gets_its_own_lines():
    out, doc = fill_at("int f(int x) {}\n", "c", 0, 14, "return x;")
    assert doc == "int f(int x) {\n    return x;\n}\n"


def test_after_opener_at_end_of_line():
    out, doc = fill_at("def f(x):\n", "python", 0, 9, "\n    return x * 2\n")
    assert doc == "def f(x):\n    return x * 2\n"


def test_column_zero_blank_line_gets_scope_indent():
    out, doc = fill_at("def f(x):\n\n", "python", 1, 0, "return x")
    assert doc == "def f(x):\n    return x\n"


def test_line_fill_stops_at_newline_and_extra_closer():
    assert fill_at("print()\n", "python", 0, 6, "foo(1))")[0] == "foo(1)"
    assert fill_at("print()\n", "python", 0, 6, "bar()")[0] == "bar()"
    assert fill_at("print()\n", "python", 0, 6, "x)\nmore = 1")[0] == "x"
    assert fill_at("total = (a + \n", "python", 0, 13, "b) * 2\nx")[0] == "b) * 2"


def test_line_fill_drops_overlap_with_rest_of_line():
    out, doc = fill_at("return  + 1;\n", "javascript", 0, 7, "a + 1;")
    assert doc == "return a + 1;\n"
    out, doc = fill_at("f(, 2);\n", "javascript", 0, 2, "g(1), 2);")
    assert doc == "f(g(1), 2);\n"


def test_syntax_aware_cut_drops_a_broken_tail():
    out, _ = fill_at("def f(x):\n    \n", "python", 1, 4, "y = x + 1\n    z = (y *\n")
    assert out == "y = x + 1"


def test_tab_settings_reindent_later_lines():
    out, _ = fill_at("def f(x):\n    \n", "python", 1, 4, "if x:\n        return 1\n    return 2", insert_spaces=False, tab_size=4)
    assert out == "if x:\n\t\treturn 1\n\treturn 2"
    # The model is shown the line without its indentation and writes the tab itself.
    out, _ = fill_at("func f() {\n\t\n}\n", "go", 1, 1, "\tif x {\n\t\treturn\n\t}", insert_spaces=True, tab_size=2)
    assert out == "if x {\n    return\n  }"


def test_regenerate_selection_keeps_trailing_newline():
    doc = Document("def f(x):\n    a = 1\n    b = 2\nprint(f(1))\n", language_id="python")
    p = plan(doc, 1, 0, selection=((1, 0), (3, 0)))
    assert p.mode == "regenerate" and p.kind == "block"
    out = finalize(doc, p, "    return x + 1\n")
    assert assemble(doc, [p], [out]) == "def f(x):\n    return x + 1\nprint(f(1))\n"


def test_hole_fill_and_marker_in_output():
    doc = Document("def f(x):\n    pass\n", language_id="python")
    (hole,) = find_holes(doc)
    out = finalize(doc, hole, "return x<|fill|> junk")
    assert out == "return x"


def test_unknown_language_line_plan():
    out, doc = fill_at("hello wor\n", "plaintext", 0, 9, "ld\nsecond line")
    assert doc == "hello world\n"


def test_empty_and_whitespace_fills():
    assert fill_at("def f(x):\n    \n", "python", 1, 4, "")[0] == ""
    assert fill_at("def f(x):\n    \n", "python", 1, 4, "\n\n   \n")[0] == ""
    assert fill_at("x = \n", "python", 0, 4, "\nfoo")[0] == ""


def test_score_ranks_valid_above_broken_and_empty():
    doc = Document("def f(x):\n    \n\nprint(f(2))\n", language_id="python")
    p = plan(doc, 1, 4)
    good = score(doc, p, "return x * 2")
    broken = score(doc, p, "return (x * ")
    repeated = score(doc, p, "return x\nprint(f(2))")
    empty = score(doc, p, "")
    assert good > broken and good > repeated and broken > empty and repeated > empty


def test_score_rewards_replacing_a_broken_marker():
    doc = Document("x = <|fill|>\n", language_id="python")
    (hole,) = find_holes(doc)
    assert score(doc, hole, "42") > score(doc, hole, "(42")


def test_count_errors_sees_missing_and_error_nodes():
    assert count_errors(Document("x = (1\n", "python").tree.root_node) >= 1
    assert count_errors(Document("int f() { return 1 }\n", "c").tree.root_node) >= 1
    assert count_errors(Document("x = 1\n", "python").tree.root_node) == 0


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=60), st.sampled_from([(1, 4), (0, 6), (2, 0)]))
def test_finalize_and_score_never_raise(fill, pos):
    doc = Document("def f(x):\n    \nprint()\n", language_id="python")
    p = plan(doc, *pos) or FillPlan(0, 0, "insert", "line", 8, "")
    out = finalize(doc, p, fill)
    assert isinstance(out, str)
    assert isinstance(score(doc, p, out), float)
