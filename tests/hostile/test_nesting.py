"""Pathological nesting (issue 17 item 3): the planner's string/comment check looked at
every ancestor of the cursor, and Node.parent itself walks down from the root, so 50k
nested brackets froze the LSP event loop for 112 s. It now looks at a bounded number of
ancestors, and a cursor nested deeper than MAX_PLAN_DEPTH gets no completion. The bound below is a hang check (before the fix this took minutes), not a
benchmark: benchmarks print figures instead."""
import threading

from grammars.document import Document
from grammars import planner

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
