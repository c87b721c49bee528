"""Caret-annotated planner fixtures, one file per language (fixtures/plan/)."""

from __future__ import annotations

import pytest

from grammar_fixtures import fixture_files, options, parse_fixture, words
from grammars.document import Document
from grammars.planner import plan

FILES = fixture_files("plan")


def test_every_language_has_a_plan_fixture():
    from grammars.languages import LANGUAGE_NAMES, language_for

    covered = {language_for(path=p.name).name for p in FILES}
    assert covered == set(LANGUAGE_NAMES)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_plan_fixture(path):
    text, cases = parse_fixture(path)
    assert cases, f"{path.name} has no annotations"
    doc = Document(text, path=str(path))
    assert doc.tree is not None
    failures = []
    for case in cases:
        p = plan(doc, case.line, case.col, encoding="utf-32")
        got = _describe(doc, p, case)
        if got is not None:
            failures.append(f"{case.where}: {' '.join(case.expect)} -> {got}")
    assert not failures, "\n".join(failures)


def _describe(doc, p, case) -> str | None:
    """None when plan `p` meets the case's expectation, else what it was."""
    want = words(case.expect)
    opts = options(case.expect)
    if want == ["none"]:
        return None if p is None else f"{p}"
    if p is None:
        return "None"
    got = f"{p.mode} {p.kind} target={p.target} indent={p.indent!r} leading={p.leading!r} span={p.start_byte}-{p.end_byte}"
    start = doc.offset_at(case.line, case.col, "utf-32")
    end = doc.offset_at(case.line, case.end_col, "utf-32") if case.end_col is not None else start
    if case.end_col is not None:
        # The `^~~~` span must be the plan's span; the caret may sit anywhere in it.
        if p.mode != want[0] or (p.start_byte, p.end_byte) != (_span_start(doc, case), end):
            return got
    elif p.mode != want[0] or (want[0] == "insert" and (p.start_byte, p.end_byte) != (start, start)):
        return got
    if p.kind != want[1]:
        return got
    if "target" in opts and p.target != opts["target"]:
        return got
    if "indent" in opts and len(p.indent.expandtabs(4)) != int(opts["indent"]):
        return got
    if ("lead" in want) != bool(p.leading) or ("trail" in want) != bool(p.trailing):
        return got
    return None


def _span_start(doc, case) -> int:
    return doc.offset_at(case.line, case.col, "utf-32")
