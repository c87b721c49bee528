"""Each post-processing filter (grammars/filters.py) and the blank-line scope (grammars/scope.py) alone."""

from __future__ import annotations

from grammars.filters import cut_unreachable, drop_dangling_tail, join_inline, reindent, with_line_breaks
from grammars.scope import blank_line_scope, enclosing_levels, pick_level
from grammars.text import BracketScan

PY = BracketScan("#", single_quote_strings=True)
C = BracketScan()


def test_cut_unreachable_drops_a_second_statement_after_return():
    lines = ["return s.lower() == s[::-1].lower()  # ...", "    return"]
    assert cut_unreachable(lines, PY, first_col=4) == lines[:1]


def test_cut_unreachable_keeps_closers_branches_and_dedented_code():
    assert cut_unreachable(["return x;", "}", "return y;"], C, first_col=4) == ["return x;", "}", "return y;"]
    lines = ["if x:", "        return 1", "    return 2"]
    assert cut_unreachable(lines, PY, first_col=4) == lines
    lines = ["case 1:", "        return 1;", "    case 2:", "        return 2;"]
    assert cut_unreachable(lines, C, first_col=4) == lines


def test_cut_unreachable_follows_a_statement_over_its_brackets():
    lines = ["return (", "        a +", "        b", "    )", "    junk()"]
    assert cut_unreachable(lines, PY, first_col=4) == lines[:4]
    lines = ["return a + \\", "        b", "    junk()"]
    assert cut_unreachable(lines, PY, first_col=4) == lines[:2]


def test_cut_unreachable_first_line_column_is_the_cursor_column():
    # The first line starts at column 8 in the document (its whitespace was before the
    # cursor); a later line at column 4 is reachable.
    lines = ["return 1", "    return 2"]
    assert cut_unreachable(lines, PY, first_col=8) == lines
    assert cut_unreachable(lines, PY, first_col=4) == lines[:1]


def test_drop_dangling_tail():
    assert drop_dangling_tail(["for {", "\t}", "\treturn"], ["return string(runes)", "}"]) == ["for {", "\t}"]
    assert drop_dangling_tail(["x := 1"], ["return string(runes)"]) == ["x := 1"]
    assert drop_dangling_tail(["}"], ["})"]) == ["}"]  # closers are the bracket rule's
    assert drop_dangling_tail(["return x"], ["return x"]) == ["return x"]  # equal: the overlap rule's
    assert drop_dangling_tail(["ret"], ["return x"]) == [""]


def test_join_inline():
    assert join_inline("    return ", " a + b") == "a + b"
    assert join_inline("\treturn ", "  strings.Join(out, \" \")") == "strings.Join(out, \" \")"
    assert join_inline("words.map(", " word => word.length") == "word => word.length"
    assert join_inline("    return", " a + b") == " a + b"
    assert join_inline("const o = {", " a: 1 ") == " a: 1 "
    assert join_inline("    ", " x") == " x"  # only whitespace before: the renderer's business


def test_reindent_shifts_later_lines_with_the_first():
    raw = [" if (*s == ' ') {", "             in_word = 0;", "         } else if (!in_word) {", "             in_word = 1;", "         }"]
    out = reindent(raw, model_col=9, actual_col=8, unit=4, scan=C)
    assert out[1:] == ["            in_word = 0;", "        } else if (!in_word) {", "            in_word = 1;", "        }"]


def test_reindent_keeps_lines_that_already_sit_on_the_grid():
    raw = [" if x:", "            y = 1", "        z = 2"]
    assert reindent(raw, model_col=9, actual_col=8, unit=4, scan=PY)[1:] == raw[1:]


def test_reindent_hanging_indents_do_not_vote():
    raw = ["x = foo(a,", "              b)", "        y = 1"]
    assert reindent(raw, model_col=8, actual_col=8, unit=4, scan=PY) == raw


def test_reindent_writes_tabs():
    raw = ["if x {", "\t\treturn", "\t}"]
    assert reindent(raw, 4, 4, 4, C, tab_size=4, insert_spaces=False) == raw
    assert reindent(raw, 2, 2, 2, C, tab_size=2, insert_spaces=True)[1:] == ["    return", "  }"]


def test_with_line_breaks():
    assert with_line_breaks("a\nb", "\r\n") == "a\r\nb"
    assert with_line_breaks("a\nb", "\n") == "a\nb"


def test_scope_column_zero_under_a_function_body_continues_it():
    above = ["        total += a", "    for a in x:", "    total = 0", "def f(x):"]
    s = blank_line_scope(above, [], "", ":", True, "    ", adjacent=True)
    assert (s.indent, s.levels, s.floor, s.single_line) == ("        ", ("        ", "    "), "    ", False)


def test_scope_between_two_lines_is_one_line():
    s = blank_line_scope(["    y = 1", "def f(x):"], ["    return y"], "", ":", True, "    ", adjacent=True)
    assert (s.indent, s.single_line) == ("    ", True)
    s = blank_line_scope(["\tx := 1", "func f() {"], ["\treturn x"], "", "{", False, "\t", adjacent=True)
    assert (s.indent, s.single_line) == ("\t", True)


def test_scope_end_of_block_and_after_opener_are_blocks():
    assert not blank_line_scope(["\tx := 1", "func f() {"], ["}"], "", "{", False, "\t", True).single_line
    s = blank_line_scope(["    if x:", "def f(x):"], ["    return 1"], "", ":", True, "    ", True)
    assert (s.indent, s.single_line, s.opens) == ("        ", False, True)


def test_scope_module_level_after_blank_lines():
    s = blank_line_scope(["    return 1", "def f():"], ["def g():"], "", ":", True, "    ", adjacent=False)
    assert (s.indent, s.single_line) == ("", False)


def test_scope_trusts_the_editors_whitespace():
    s = blank_line_scope(["        total += a", "    for a in x:"], [], "        ", ":", True, "    ", True)
    assert (s.indent, s.levels) == ("        ", ("        ",))


def test_enclosing_levels_stop_at_the_function_body():
    above = ["            c()", "        if b:", "    def m(self):", "class C:"]
    assert enclosing_levels(above) == ("            ", "        ")
    assert enclosing_levels(["    main()", 'if __name__ == "__main__":']) == ("    ",)


def test_pick_level():
    levels = ("        ", "    ")
    assert pick_level(levels, "        ", "    ") == "    "
    assert pick_level(levels, "        ", "") == "        "
    assert pick_level(levels, "        ", "      ") == "        "
