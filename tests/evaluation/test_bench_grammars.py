"""The planning benchmark runs and ends with one JSON line (no timing assertions)."""

from __future__ import annotations

import json

from evaluation import bench_grammars as bench


def test_bench_smoke(capsys):
    assert bench.main(["--lines", "120", "--keys", "8", "--warmup", "2", "--langs", "python,rust", "--no-autoclose"]) == 0
    out = capsys.readouterr().out.strip().split("\n")
    result = json.loads(out[-1])
    rows = result["rows"]
    assert [(r["lang"], r["autoclose"]) for r in rows] == [("python", True), ("python", False), ("rust", True), ("rust", False)]
    for r in rows:
        assert r["keys"] == 8 and r["lines"] >= 120
        # every keystroke at the end of the line being typed is planned (a line fill)
        assert r["plans"] == r["keys"], r
        assert 0 < r["edit_p50_ms"] and 0 < r["plan_p50_ms"] and r["total_p50_ms"] <= r["total_p95_ms"]
        assert r["full_parse_ms"] > 0
    assert result["worst_total_p50_ms"] == max(r["total_p50_ms"] for r in rows if r["autoclose"])
    assert "total p50" in out[0] and len(out) == 1 + len(rows) + 1  # header, a row each, the JSON line
