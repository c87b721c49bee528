"""The planning benchmark runs and ends with one JSON line (no timing assertions)."""

from __future__ import annotations

import json

from evaluation import bench_grammars as bench


def test_bench_smoke(capsys):
    assert bench.main(["--lines", "120", "--keys", "8", "--warmup", "2", "--langs", "python,rust", "--no-autoclose"]) == 0
    out = capsys.readouterr().out.strip().split("\n")
    result = json.loads(out[-1])
    assert {r["lang"] for r in result["rows"]} == {"python", "rust"}
    assert all(r["plans"] >= 1 for r in result["rows"])
    assert "total p50" in out[0]
