"""Held-out holes: deterministic, planner-placed, and their truth is the removed text."""
import re

import pytest

from evaluation.heldout import (KINDS, load_files, prev_line_fill, sample_holes, wanted_counts)
from evaluation.scoring import errors_with, score

from .corpus_fixture import write_corpus


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = write_corpus(tmp_path_factory.mktemp("corpus"))
    return load_files([folder / "holdout.jsonl", folder / "valid.jsonl"])


@pytest.fixture(scope="module")
def holes(files):
    return sample_holes(files, 24, seed=0)


def _original(files, hole):
    return next(f.text for f in files if f.path == hole.path)


def test_counts_kinds_and_interleaving(holes):
    assert wanted_counts(24) == {"single-line": 12, "multi-line": 6, "block": 6}
    kinds = [h.kind for h in holes]
    assert set(kinds) == set(KINDS)
    assert len(holes) >= 16
    # any prefix is balanced: the first four holes hold every kind
    assert set(kinds[:4]) == set(KINDS)
    assert {h.lang for h in holes} >= {"python", "c"}


def test_deterministic_and_seeded(files, holes):
    again = sample_holes(files, 24, seed=0)
    key = lambda hs: [(h.kind, h.path, h.plan.start_byte, h.truth) for h in hs]
    assert key(again) == key(holes)
    assert key(sample_holes(files, 24, seed=1)) != key(holes)


def test_plans_match_their_kind(holes):
    for h in holes:
        p = h.plan
        assert p.start_byte == p.end_byte and p.mode == "insert"
        if h.kind == "single-line":
            assert p.kind == "line" and "\n" not in h.truth
        elif h.kind == "multi-line":
            assert p.kind == "block" and p.leading == "" and "\n" in h.truth
        else:
            assert p.kind == "block" and p.leading.startswith("\n")


def test_truth_put_back_gives_the_original_file(files, holes):
    squash = lambda s: re.sub(r"\s+", " ", s).strip()
    exact = 0
    for h in holes:
        src = h.doc.source
        rebuilt = (src[: h.plan.start_byte] + h.truth.encode() + src[h.plan.end_byte:]).decode()
        original = _original(files, h)
        assert squash(rebuilt) == squash(original), (h.kind, h.path, h.truth)
        exact += rebuilt == original
    assert exact >= len(holes) // 2  # most put back byte for byte (blocks may lose a blank line)


def test_truth_scores_perfectly_and_empty_does_not(holes):
    for h in holes:
        errs = errors_with(h, h.truth)
        s = score(h, h.truth, errs)
        assert s == {"exact": True, "edit_sim": 1.0, "valid": True}
        assert score(h, "", errs)["exact"] is False


def test_prev_line_baseline(holes):
    for h in holes:
        prev = prev_line_fill(h)
        assert "\n" not in prev
        if h.kind != "single-line":
            assert prev == prev.strip()


def test_junk_and_empty_inputs(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('not json\n{"path": "a.py"}\n{"path": "b.xyz", "lang": "", "text": "???"}\n{"path": "e.py", "lang": "python", "text": ""}\n')
    files = load_files([bad])
    assert [f.path for f in files] == ["b.xyz", "e.py"]
    assert sample_holes(files, 10) == []
    assert sample_holes([], 10) == []


def test_mid_word_holes_cut_inside_an_identifier_or_an_operator(files):
    from evaluation.heldout import OPERATOR_CHARS
    from grammars.text import is_ident_char

    holes = sample_holes(files, 12, seed=0, cut="mid-word")
    assert len(holes) >= 6 and {h.kind for h in holes} == {"single-line"}
    assert [h.truth for h in holes] == [h.truth for h in sample_holes(files, 12, seed=0, cut="mid-word")]
    for h in holes:
        original = _original(files, h).encode("utf-8")
        at = h.plan.start_byte
        a, b = original[at - 1 : at].decode(), original[at : at + 1].decode()
        assert (is_ident_char(a) and is_ident_char(b)) or (a in OPERATOR_CHARS and b in OPERATOR_CHARS), (a, b)
        assert h.plan.kind == "line" and h.truth and original[at:].decode().startswith(h.truth)
