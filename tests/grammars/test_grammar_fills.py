"""Fills a user keeps (issue 24): the scope of a blank line from the lines around it, the
document's indentation and line breaks, no stray trailing lines, no doubled spaces.

Each case is a document, a cursor and a raw model fill as the default model returns them
(a first line one column off, the rest of a file after a one-line hole, a bare `return`
against the suffix), on Python, Go, C, JavaScript, TypeScript and Rust, in LF and CRLF.
"""

from __future__ import annotations

import pytest

from grammars.document import Document
from grammars.holes import find_holes
from grammars.planner import assemble, plan
from grammars.postprocess import count_errors, finalize

EOLS = {"lf": "\n", "crlf": "\r\n"}


def cursor_of(text: str) -> tuple[str, int, int]:
    """The text without its `|` cursor mark, and the cursor's (line, character)."""
    at = text.index("|")
    head = text[:at]
    return text[:at] + text[at + 1:], head.count("\n"), len(head.rsplit("\n", 1)[-1])


def fill(text: str, lang: str, raw: str, eol: str = "\n", **kw) -> tuple[str, str]:
    """(finalized fill, the document with it) for a `|`-marked document in line breaks `eol`."""
    src, line, col = cursor_of(text)
    doc = Document(src.replace("\n", eol), language_id=lang)
    p = plan(doc, line, col)
    assert p is not None
    out = finalize(doc, p, raw, **kw)
    return out, assemble(doc, [p], [out])


def assert_eol(text: str, eol: str) -> None:
    if eol == "\r\n":
        assert "\n" not in text.replace("\r\n", ""), repr(text)
    else:
        assert "\r" not in text, repr(text)


# -- item 0: the scope of a blank line with the cursor at column 0 ---------------------------

PY_TAIL = "def vowels(s):\n    n = 0\n    for c in s:\n        n += c in 'aeiou'\n|\n"


@pytest.mark.parametrize("eol", EOLS.values(), ids=EOLS)
def test_python_column_zero_at_function_end_gets_the_body_indent_and_stops_at_its_end(eol):
    out, doc = fill(PY_TAIL, "python", "    return n\n\ndef test_vowels_count():\n    assert vowels('a') == 1\n", eol)
    assert out == "    return n"
    assert doc == PY_TAIL.replace("|", "    return n").replace("\n", eol)


def test_python_column_zero_first_line_keeps_the_models_enclosing_level():
    out, _ = fill(PY_TAIL, "python", "        n += 1\n")
    assert out == "        n += 1"
    # No indentation from the model: the innermost block, never module level.
    out, _ = fill(PY_TAIL, "python", "return n")
    assert out == "        return n"


def test_python_column_zero_cuts_code_after_the_return_and_new_top_level_code():
    out, _ = fill(PY_TAIL, "python", "    return n\n    # Check function to verify\n    print(vowels('ab'))\n")
    assert out == "    return n"
    out, _ = fill(PY_TAIL, "python", "    return n\n# Check function to verify\nprint(vowels('ab'))\n")
    assert out == "    return n"


@pytest.mark.parametrize("eol", EOLS.values(), ids=EOLS)
def test_python_column_zero_between_two_lines_is_one_line(eol):
    text = "def total(xs):\n    t = 0\n|\n    return t\n"
    out, doc = fill(text, "python", "    for x in xs:\n        t += x\n", eol)
    assert out == "    for x in xs:"
    d = Document(text.replace("|", "").replace("\n", eol), language_id="python")
    p = plan(d, 2, 0)
    assert p.stop.single_line and p.indent == "    "


C_LIKE = {
    "c": ("int f(int x) {\n    int y = x;\n|\n    return y;\n}\n", "    y = y * 2;\n    y += 1;\n", "    y = y * 2;"),
    "go": ("func f(x int) int {\n\ty := x\n|\n\treturn y\n}\n", "\ty *= 2\n\ty++\n", "\ty *= 2"),
    "javascript": ("function f(x) {\n  let y = x;\n|\n  return y;\n}\n", "  y *= 2;\n  y += 1;\n", "  y *= 2;"),
    "typescript": ("function f(x: number): number {\n  let y = x;\n|\n  return y;\n}\n", "  y *= 2;\n  y += 1;\n",
                   "  y *= 2;"),
    "rust": ("fn f(x: i32) -> i32 {\n    let mut y = x;\n|\n    y\n}\n", "    y *= 2;\n    y += 1;\n", "    y *= 2;"),
}


@pytest.mark.parametrize("eol", EOLS.values(), ids=EOLS)
@pytest.mark.parametrize("lang", sorted(C_LIKE))
def test_brace_languages_column_zero_between_statements(lang, eol):
    text, raw, want = C_LIKE[lang]
    out, doc = fill(text, lang, raw, eol, insert_spaces="\t" not in want)
    assert out == want
    assert doc == text.replace("|", want).replace("\n", eol)


@pytest.mark.parametrize("lang", sorted(C_LIKE))
def test_brace_languages_column_zero_at_block_end_stops_at_the_closer(lang):
    text, raw, want = C_LIKE[lang]
    head, tail = text.split("|\n")
    last = head.rstrip("\n").split("\n")[-1]
    text = head + "|\n}\n"  # the blank line is the function's last
    ws = last[: len(last) - len(last.lstrip())]
    out, doc = fill(text, lang, raw + "}\n\nint main() {}\n", insert_spaces="\t" not in ws)
    assert out.split("\n")[0] == want and "main" not in out
    d = Document(doc, language_id=lang)
    assert count_errors(d.tree.root_node) == 0, doc


# -- item 2: continuation lines in the document's indentation, CRLF inside fills -----------

NESTED = {  # (document with the cursor at an indentation, raw fill one column off, expected document)
    "c": ("int words(const char *s) {\n    int n = 0, in_word = 0;\n    while (*s) {\n        |\n        s++;\n    }\n"
          "    return n;\n}\n",
          " if (*s == ' ') {\n             in_word = 0;\n         } else if (!in_word) {\n             in_word = 1;\n"
          "             n++;\n         }\n",
          "        if (*s == ' ') {\n            in_word = 0;\n        } else if (!in_word) {\n            in_word = 1;\n"
          "            n++;\n        }\n"),
    "javascript": ("function count(words) {\n  const seen = {};\n  for (const w of words) {\n    |\n  }\n  return seen;\n}\n",
                   " if (seen[w]) {\n       seen[w] += 1;\n     } else {\n       seen[w] = 1;\n     }\n",
                   "    if (seen[w]) {\n      seen[w] += 1;\n    } else {\n      seen[w] = 1;\n    }\n"),
    "typescript": ("function count(words: string[]): number {\n  let n = 0;\n  for (const w of words) {\n    |\n  }\n"
                   "  return n;\n}\n",
                   " if (w.length > 0) {\n       n += 1;\n     }\n",
                   "    if (w.length > 0) {\n      n += 1;\n    }\n"),
    "rust": ("fn count(words: &[&str]) -> usize {\n    let mut n = 0;\n    for w in words {\n        |\n    }\n    n\n}\n",
             " if !w.is_empty() {\n             n += 1;\n         }\n",
             "        if !w.is_empty() {\n            n += 1;\n        }\n"),
    "python": ("def count(words):\n    n = 0\n    for w in words:\n        |\n    return n\n",
               " if w:\n             n += 1\n         else:\n             n -= 1\n",
               "        if w:\n            n += 1\n        else:\n            n -= 1\n"),
    "go": ("func count(words []string) int {\n\tn := 0\n\tfor _, w := range words {\n\t\t|\n\t}\n\treturn n\n}\n",
           "if w != \"\" {\n\t\t\tn++\n\t\t}\n",
           "\t\tif w != \"\" {\n\t\t\tn++\n\t\t}\n"),
}


@pytest.mark.parametrize("eol", EOLS.values(), ids=EOLS)
@pytest.mark.parametrize("lang", sorted(NESTED))
def test_continuation_lines_follow_the_first_line(lang, eol):
    text, raw, want = NESTED[lang]
    cursor_line = text.split("|")[0].rsplit("\n", 1)[-1]
    # The model is shown the hole's line without its indentation (model_line_start) and
    # writes it itself, one column too deep on every line.
    raw = cursor_line + raw
    out, doc = fill(text, lang, raw, eol, insert_spaces=lang != "go")
    assert doc == (text.split("|")[0][: -len(cursor_line)] + want + text.split("|\n", 1)[1]).replace("\n", eol)
    assert_eol(out, eol)
    assert count_errors(Document(doc, language_id=lang).tree.root_node) == 0


@pytest.mark.parametrize("eol", EOLS.values(), ids=EOLS)
def test_python_nested_block_fill_compiles(eol):
    text, raw, _ = NESTED["python"]
    _, doc = fill(text, "python", "        " + raw, eol)
    compile(doc.replace("\r\n", "\n"), "<fill>", "exec")


@pytest.mark.parametrize("eol", EOLS.values(), ids=EOLS)
def test_after_opener_and_inline_braces_use_the_documents_line_breaks(eol):
    out, doc = fill("def f(x):|\n", "python", "\n    y = x\n    return y\n", eol)
    assert doc == "def f(x):\n    y = x\n    return y\n".replace("\n", eol)
    out, doc = fill("int f(int x) {|}\n", "c", "return x;", eol)
    assert doc == "int f(int x) {\n    return x;\n}\n".replace("\n", eol)


# -- item 1: stray lines after a fill -------------------------------------------------------

def test_examples_palindrome_has_no_stray_return():
    from pathlib import Path

    src = (Path(__file__).resolve().parents[2] / "examples" / "holes.py").read_text(encoding="utf-8")
    doc = Document(src, path="holes.py")
    hole = find_holes(doc)[-1]
    out = finalize(doc, hole, "return s.lower() == s[::-1].lower()  # ...\n    return")
    assert out == "return s.lower() == s[::-1].lower()  # ..."


@pytest.mark.parametrize("eol", EOLS.values(), ids=EOLS)
def test_go_fill_drops_a_bare_return_before_the_suffixs_return(eol):
    from pathlib import Path

    src = (Path(__file__).resolve().parents[2] / "examples" / "holes.go").read_text(encoding="utf-8")
    doc = Document(src.replace("\n", eol), path="holes.go")
    hole = find_holes(doc)[-1]
    raw = "for i, j := 0, len(runes)-1; i < j; i, j = i+1, j-1 {\n\t\trunes[i], runes[j] = runes[j], runes[i]\n\t}\n\treturn"
    out = finalize(doc, hole, raw, insert_spaces=False)
    assert out == "for i, j := 0, len(runes)-1; i < j; i, j = i+1, j-1 {\n\t\trunes[i], runes[j] = runes[j], runes[i]\n\t}".replace("\n", eol)


# -- item 3: inline holes join without doubling whitespace ----------------------------------

INLINE = {
    "python": ("def add(a, b):\n    return <|fill|>\n", " a + b", "    return a + b"),
    "go": ("func join(out []string) string {\n\treturn <|fill|>\n}\n", " strings.Join(out, \" \")",
           "\treturn strings.Join(out, \" \")"),
    "javascript": ("const n = words.map(<|fill|>);\n", " word => word.length", "const n = words.map(word => word.length);"),
    "typescript": ("const n: number[] = words.map(<|fill|>);\n", " (w: string) => w.length",
                   "const n: number[] = words.map((w: string) => w.length);"),
    "rust": ("fn add(a: i32, b: i32) -> i32 {\n    return <|fill|>;\n}\n", " a + b", "    return a + b;"),
    "c": ("int add(int a, int b) {\n    return <|fill|>;\n}\n", "  a + b", "    return a + b;"),
}


@pytest.mark.parametrize("eol", EOLS.values(), ids=EOLS)
@pytest.mark.parametrize("lang", sorted(INLINE))
def test_inline_hole_joins_without_doubling_whitespace(lang, eol):
    text, raw, want_line = INLINE[lang]
    doc = Document(text.replace("\n", eol), language_id=lang)
    (hole,) = find_holes(doc)
    out = finalize(doc, hole, raw)
    new = assemble(doc, [hole], [out])
    assert want_line in new.replace("\r\n", "\n").split("\n")
    assert_eol(new, eol)


def test_inline_cursor_after_a_space_joins_without_doubling():
    out, doc = fill("x = |\n", "python", " compute(1)")
    assert doc == "x = compute(1)\n"


def test_the_model_writes_a_blocks_indentation_itself():
    """The model is shown a block hole's line without the editor's indentation (a prompt
    ending in whitespace made the default model answer nothing); finalize puts the fill
    back at the indentation."""
    from grammars.planner import with_plan_context

    text = "def f(x):\n    y = 1\n    \n"
    doc = Document(text, language_id="python")
    p = plan(doc, 2, 4)
    segs = with_plan_context(["def f(x):\n    y = 1\n    ", "\n"], [p])
    assert segs[0] == "def f(x):\n    y = 1\n"
    assert finalize(doc, p, "    return y\n") == "return y"
    after_opener = Document("def f(x):\n", language_id="python")
    p = plan(after_opener, 0, 9)
    assert with_plan_context(["def f(x):", "\n"], [p])[0] == "def f(x):\n"
    assert finalize(after_opener, p, "    y = x\n    return y\n") == "\n    y = x\n    return y"
    line = Document("x = \n", language_id="python")
    p = plan(line, 0, 4)
    assert with_plan_context(["x = ", "\n"], [p])[0] == "x = "  # a line hole keeps its text
