"""The HumanEval-Infilling file format and the post-processing of a fill into a program."""
import gzip
import json
from pathlib import Path

import pytest

from diffusion_core.errors import CoreError
from evaluation.sandbox import run_program
from evaluation.infilling import FIELDS, load_problems, program
from evaluation.infilling import finalize_fill

FIXTURE = Path(__file__).parent / "fixtures" / "mini_infilling.jsonl"


def test_fixture_loads_with_variants():
    probs = load_problems(FIXTURE)
    assert [p.single_line for p in probs] == [True, True, False, False, False]
    assert [p.whole_lines for p in probs] == [True, True, True, False, False]
    assert load_problems(FIXTURE, limit=2) == probs[:2]


def test_single_line_from_task_id_else_solution():
    from dataclasses import replace

    p = load_problems(FIXTURE)[0]
    assert replace(p, task_id="MultiLineInfilling/HumanEval/0/L0_L0").single_line is False
    assert replace(p, task_id="custom/1").single_line is True
    assert replace(p, task_id="custom/2", canonical_solution="a\nb\n").single_line is False


def test_gzip_file_reads_the_same(tmp_path):
    gz = tmp_path / "mini.jsonl.gz"
    gz.write_bytes(gzip.compress(FIXTURE.read_bytes()))
    assert load_problems(gz) == load_problems(FIXTURE)


@pytest.mark.parametrize("content, needle", [
    ("{not json\n", ":1: not JSON"),
    ("[1, 2]\n", ":1: expected a JSON object"),
    (json.dumps({"task_id": "x"}) + "\n", ":1: missing prompt"),
    (json.dumps({k: 1 for k in FIELDS}) + "\n", "must be strings"),
])
def test_bad_records_are_one_line_errors(tmp_path, content, needle):
    f = tmp_path / "bad.jsonl"
    f.write_text("\n" + content)
    with pytest.raises(CoreError) as err:
        load_problems(f)
    msg = str(err.value)
    assert "\n" not in msg and str(f) in msg and needle.replace(":1:", ":2:") in msg


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(CoreError, match="no such dataset file"):
        load_problems(tmp_path / "nope.jsonl")
    bad = tmp_path / "bad.jsonl.gz"
    bad.write_bytes(b"not gzip at all")
    with pytest.raises(CoreError, match="cannot read"):
        load_problems(bad)


def test_program_layout():
    p = load_problems(FIXTURE)[0]
    src = program(p, "    return a + b\n")
    assert src.startswith(p.prompt + "    return a + b\n")
    assert src.rstrip().endswith("check(add)")


@pytest.mark.parametrize("raw_of", [
    lambda p: p.canonical_solution,            # the model wrote the line with its indentation
    lambda p: p.canonical_solution + "\n\n# trailing junk line\nx = (",  # and more after it
])
def test_finalized_canonical_fills_still_pass(raw_of):
    """Post-processing must keep a correct fill correct (and cut what follows it)."""
    for p in load_problems(FIXTURE):
        raw = raw_of(p)
        if not p.single_line and raw != p.canonical_solution:
            continue  # a multi-line hole has no line count to cut junk at
        fill = finalize_fill(p, raw)
        res = run_program(program(p, fill), timeout_s=20)
        assert res.passed, (p.task_id, repr(fill), res.detail)
