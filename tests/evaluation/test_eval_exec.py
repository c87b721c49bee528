"""The sandboxed runner: a subprocess per program, with time, memory and output limits."""
import os
from pathlib import Path

import pytest

from evaluation.sandbox import FAILED, PASSED, TIMEOUT, run_program
from evaluation.infilling import load_problems, program

FIXTURE = Path(__file__).parent / "fixtures" / "mini_infilling.jsonl"


@pytest.fixture(scope="module")
def problems():
    return load_problems(FIXTURE)


def test_every_canonical_solution_passes(problems):
    assert len(problems) == 5
    for p in problems:
        res = run_program(program(p, p.canonical_solution), timeout_s=20)
        assert res.status == PASSED, (p.task_id, res.detail)


def test_wrong_fill_fails(problems):
    p = problems[0]
    res = run_program(program(p, "    return a - b\n"), timeout_s=20)
    assert res.status == FAILED and res.returncode == 1
    assert "AssertionError" in res.detail


def test_syntax_error_fails(problems):
    res = run_program(program(problems[0], "    return a +\n"), timeout_s=20)
    assert res.status == FAILED and "SyntaxError" in res.detail


def test_infinite_loop_times_out(problems):
    res = run_program(program(problems[0], "    while True:\n        pass\n"), timeout_s=1.5)
    assert res.status == TIMEOUT and not res.passed


def test_memory_hog_fails_cleanly(problems):
    hog = "    blocks = []\n    while True:\n        blocks.append(bytearray(64 << 20))\n"
    res = run_program(program(problems[0], hog), timeout_s=20, memory_mb=256)
    assert res.status == FAILED
    assert "MemoryError" in res.detail


def test_output_flood_is_cut(problems):
    flood = "    while True:\n        print('x' * 1000)\n"
    res = run_program(program(problems[0], flood), timeout_s=20)
    assert res.status == FAILED  # SIGXFSZ at the output-size limit, long before the timeout


def test_program_runs_outside_this_process_and_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    src = "import os, sys\nopen('left_behind.txt', 'w').write(str(os.getpid()))\nsys.exit(0 if os.getcwd() != %r else 3)\n" % str(tmp_path)
    res = run_program(src, timeout_s=20)
    assert res.passed, res.detail
    assert not (tmp_path / "left_behind.txt").exists()
    assert os.getcwd() == str(tmp_path)


def test_exit_status_is_the_verdict():
    assert run_program("raise SystemExit(0)\n", timeout_s=20).passed
    res = run_program("raise SystemExit(4)\n", timeout_s=20)
    assert res.status == FAILED and res.returncode == 4
