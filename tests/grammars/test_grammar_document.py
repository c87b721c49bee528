"""Incremental edits: the edited tree equals a fresh parse; text stays exact."""

from __future__ import annotations

import random

import pytest

from grammars.document import Document


def _nodes(tree):
    out = []
    stack = [tree.root_node]
    while stack:
        n = stack.pop()
        out.append((n.type, n.start_byte, n.end_byte, n.is_missing))
        stack.extend(reversed(n.children))
    return out


def _utf16_pos(text: str, index: int) -> tuple[int, int]:
    before = text[:index]
    line = before.count("\n")
    col_text = before[before.rfind("\n") + 1 :]
    return line, len(col_text.encode("utf-16-le")) // 2


SAMPLES = {
    "python": "def f(x):\n    s = 'héllo 😀'\n    return x + 1\n\nclass A:\n    pass\n",
    "rust": "fn f(x: i64) -> i64 {\n    let s = \"héllo 😀\";\n    x + 1\n}\n",
    "tsx": "const App = () => <div title=\"é\">{x}</div>;\nfunction f(a: number) { return a; }\n",
}
SNIPPETS = ["x", "(", ")", "\n", "    ", "é", "😀", "if y:\n  ", "{", "}", "\"", "", "return 2;"]


@pytest.mark.parametrize("lang", sorted(SAMPLES))
def test_incremental_edits_equal_fresh_parse(lang):
    rng = random.Random(lang)
    text = SAMPLES[lang]
    doc = Document(text, language_id=lang)
    for _ in range(60):
        a = rng.randrange(len(text) + 1)
        b = min(len(text), a + rng.choice([0, 0, 1, 3, 8]))
        new = rng.choice(SNIPPETS)
        doc.apply_change(_utf16_pos(text, a), _utf16_pos(text, b), new)
        text = text[:a] + new + text[b:]
        assert doc.text == text
        assert doc.source == text.encode()
        fresh = Document(text, language_id=lang)
        assert _nodes(doc.tree) == _nodes(fresh.tree)
        assert doc.line_starts == fresh.line_starts


def test_full_replacement_and_unknown_language():
    doc = Document("x = 1\n", language_id="python")
    doc.apply_change(None, None, "y = 2\n")
    assert doc.text == "y = 2\n" and "assignment" in str(doc.tree.root_node)
    plain = Document("anything\n", language_id="markdown")
    assert plain.tree is None and plain.language is None
    plain.apply_change((0, 0), (0, 3), "some")
    assert plain.text == "something\n"


def test_out_of_range_changes_clamp():
    doc = Document("abc\n", language_id="python")
    doc.apply_change((10, 0), (12, 4), "x")
    assert doc.text == "abc\nx"
    doc.apply_change((0, 2), (0, 1), "")  # reversed range
    assert doc.text == "ac\nx"


def test_encodings_in_apply_change():
    doc = Document("😀a\n", language_id="python")
    doc.apply_change((0, 2), (0, 3), "b", encoding="utf-16")
    assert doc.text == "😀b\n"
    doc.apply_change((0, 1), (0, 2), "c", encoding="utf-32")
    assert doc.text == "😀c\n"
    doc.apply_change((0, 4), (0, 5), "d", encoding="utf-8")
    assert doc.text == "😀d\n"


def test_reparse_with_leaves_document_alone():
    doc = Document("def f():\n    pass\n", language_id="python")
    before = _nodes(doc.tree)
    source, tree = doc.reparse_with(13, 17, b"return (")
    assert source == b"def f():\n    return (\n" and tree.root_node.has_error
    assert _nodes(doc.tree) == before and doc.text == "def f():\n    pass\n"


def test_edits_compose_before_the_lazy_reparse():
    text = SAMPLES["python"]
    doc = Document(text, language_id="python")
    rng = random.Random(11)
    for _ in range(20):
        for _ in range(rng.randrange(1, 6)):  # several edits, no tree access in between
            a = rng.randrange(len(text) + 1)
            b = min(len(text), a + rng.choice([0, 1, 4]))
            new = rng.choice(SNIPPETS)
            doc.apply_change(_utf16_pos(text, a), _utf16_pos(text, b), new)
            text = text[:a] + new + text[b:]
        assert _nodes(doc.tree) == _nodes(Document(text, language_id="python").tree)
