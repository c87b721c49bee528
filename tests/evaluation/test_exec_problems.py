"""Execution problems built from a corpus's validation split: selection, probing and hole checks."""
import json
import random

from evaluation.sandbox import run_program
from evaluation import exec_problems as E

GOOD = '''import math
import os

SCALE = 3


def clamp(x, lo=0, hi=10):
    """x limited to [lo, hi]."""
    if x < lo:
        return lo
    if x > hi:
        return hi
    return x


def scaled_words(text):
    words = text.split()
    out = []
    for w in words:
        out.append(w.upper() * SCALE)
    return out


def uses_os(path):
    base = os.path.basename(path)
    name = base.strip()
    return name


def reads_file(path):
    with open(path) as f:
        data = f.read()
    return data
'''


def _corpus(tmp_path, text=GOOD):
    path = tmp_path / "valid.jsonl"
    path.write_text(json.dumps({"path": "m.py", "package": "m", "lang": "python", "text": text}) + "\n")
    return path


def test_only_self_contained_functions_are_candidates():
    names = [c.name for c in E.candidates("m.py", GOOD)]
    assert names == ["clamp", "scaled_words"]  # os.* and open() are not safe
    words = next(c for c in E.candidates("m.py", GOOD) if c.name == "scaled_words")
    assert words.preamble == "SCALE = 3\n"


def test_problems_pass_with_their_solution_and_fail_without_it(tmp_path):
    probs = E.build([_corpus(tmp_path)], n_single=10, n_multi=10, seed=1)
    assert probs, "no problems built from two eligible functions"
    kinds = {p["task_id"].split("/")[0] for p in probs}
    assert kinds <= {"SingleLineInfilling", "MultiLineInfilling"}
    for p in probs:
        assert p["entry_point"] in ("clamp", "scaled_words")
        whole = p["prompt"] + p["canonical_solution"] + p["suffix"]
        preamble, fn = whole.split("def ", 1)
        assert preamble in ("", "SCALE = 3\n") and "def " + fn in GOOD  # the function verbatim
        good = E._program(p["prompt"], p["canonical_solution"], p["suffix"], p["test"], p["entry_point"])
        assert run_program(good).passed, p["task_id"]
        empty = E._program(p["prompt"], "", p["suffix"], p["test"], p["entry_point"])
        assert not run_program(empty).passed, p["task_id"]
        assert p["test"].count("assert candidate") >= E.MIN_CASES


def test_probe_drops_unstable_and_slow_calls():
    text = '''def slow(n):
    while n >= 0:
        n = n
    return n


def identity(x):
    y = x
    z = y
    return z
'''
    cands = E.candidates("m.py", text)
    assert [c.name for c in cands] == ["slow", "identity"]
    slow, ident = E.probe(cands, random.Random(0))
    assert all(r == "-4" for _, r in slow)  # only the calls that return at once (negative n) are kept
    assert len(ident) > 10 and all(a == f"({r},)" for a, r in ident)
