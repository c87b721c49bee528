"""Pathological nesting (issue 17 item 3): the planner's string/comment check looked at
every ancestor of the cursor, and Node.parent itself walks down from the root, so 50k
nested brackets froze the LSP event loop for 112 s. It now looks at a bounded number of
ancestors, and a cursor nested deeper than MAX_PLAN_DEPTH gets no completion. Each
keystroke still cost ~210 ms of incremental reparse (tree-sitter rebuilds the spine
down to the edit), so a document whose brackets nest deeper than MAX_PARSE_NESTING is
not parsed at all. The bound below is a hang check (before the fix this took minutes),
not a benchmark: benchmarks print figures instead."""
import threading

from grammars import document, planner
from grammars.document import MAX_PARSE_NESTING, Document, nesting_depth

HANG = 60.0  # seconds; the fixed planner answers in well under one


def _plan_in_thread(doc, line, character):
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("plan", planner.plan(doc, line, character)), daemon=True)
    t.start()
    t.join(HANG)
    return t.is_alive(), out.get("plan")


def test_deep_brackets_do_not_hang_the_planner():
    n = 50_000
    doc = Document("x = " + "[" * n + "]" * n + "\n", "python", "/h.py")
    hung, plan = _plan_in_thread(doc, 0, n + 2)
    assert not hung
    assert plan is None  # deeper than MAX_PLAN_DEPTH: no completion, at bounded cost


def test_ordinary_nesting_still_plans():
    n = planner.MAX_PLAN_DEPTH // 2
    doc = Document("x = " + "[" * n + "]" * n + "\n", "python", "/h.py")
    plan = planner.plan(doc, 0, n + 4)
    assert plan is not None and plan.kind == "line"
    assert not planner.too_deep(doc, n + 4)


def test_strings_and_comments_still_detected_inside_nesting():
    doc = Document("x = [[[[ 'abc', # note\n ]]]]\n", "python", "/h.py")
    assert planner.in_string_or_comment(doc, doc.text.index("bc"))
    assert planner.in_string_or_comment(doc, doc.text.index("ote"))
    assert not planner.in_string_or_comment(doc, doc.text.index(" ]"))
    f = Document('y = f"{[[[[a]]]]}"\n', "python", "/h.py")
    assert not planner.in_string_or_comment(f, f.text.index("a]"))


def _deep(n):
    return "x = " + "[" * n + "]" * n + "\n"


def test_deep_document_is_not_parsed_before_or_after_a_keystroke(monkeypatch):
    n = 50_000
    doc = Document(_deep(n), "python", "/h.py")
    assert doc.language == "python" and doc.too_deep and doc.tree is None
    calls = []
    real = document.nesting_depth
    monkeypatch.setattr(document, "nesting_depth", lambda src: calls.append(1) or real(src))
    for i in range(3):
        doc.apply_change((0, n + 2 + i), (0, n + 2 + i), " [")
        assert doc.tree is None
        assert planner.plan(doc, 0, n + 3 + i) is None
    assert calls == []  # far past the bound: a keystroke neither reparses nor rescans


def test_nesting_bound_is_tracked_across_edits():
    n = MAX_PARSE_NESTING
    doc = Document(_deep(n), "python", "/h.py")  # exactly at the bound: parsed
    assert not doc.too_deep and doc.tree is not None
    doc.apply_change((0, 4), (0, 4), "[")
    doc.apply_change((0, len(doc.text) - 1), (0, len(doc.text) - 1), "]")  # one level deeper
    assert doc.too_deep and doc.tree is None
    doc.apply_change((0, 4), (0, 6), "")  # two opens fewer: parseable again, from scratch
    assert not doc.too_deep
    assert str(doc.tree.root_node) == str(Document(doc.text, "python", "/h.py").tree.root_node)
    doc.apply_change(None, None, _deep(2 * n))
    assert doc.tree is None


def test_ordinary_documents_keep_their_tree():
    # stray brackets in strings do not add up over a file
    text = 'def lex(c):\n' + '    if c == "(":\n        pass\n' * 3000 + '    return [f(c) for c in "[{"]\n'
    doc = Document(text, "python", "/lex.py")
    assert nesting_depth(doc.source) < 10 and not doc.too_deep and doc.tree is not None
    doc.apply_change((1, 4), (1, 4), "x = ([{}])\n    ")
    assert str(doc.tree.root_node) == str(Document(doc.text, "python", "/lex.py").tree.root_node)
    assert not Document("[" * 5000, None, "/notes.txt").too_deep  # no parser: never scanned


def test_nesting_depth_counts_matched_pairs_only():
    assert [nesting_depth(s) for s in (b"", b"a(b)c", b"[[]]", b"[(])", b"]]][[[", b"[[[]", b"[]]]")] == [
        0, 1, 2, 2, 0, 1, 1]
    assert nesting_depth(_deep(3000).encode()) == 3000
