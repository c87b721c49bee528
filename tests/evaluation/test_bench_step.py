"""`diffill bench step` (evaluation.bench_step) on a tiny model folder: a timed step per row
count, its profile split, the prefill rate, and one JSON line last."""
from __future__ import annotations

import json

import pytest
import torch

from evaluation import bench_step
from evaluation.tiny_model import make_tiny_model


@pytest.fixture(autouse=True)
def _threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)  # the benchmark sets its own --threads


def test_tiny_model_steps_and_prefill_print_json_last(tmp_path, capsys):
    model = make_tiny_model(tmp_path / "tiny", seed=0)
    rc = bench_step.main(["--model", str(model), "--context", "32", "--rows", "1,4", "--reps", "2",
                          "--threads", "1", "--weights", "float32", "--prefill", "8"])
    assert rc == 0
    out, err = capsys.readouterr()
    doc = json.loads(out.strip().splitlines()[-1])
    assert doc["bench"] == "step" and doc["model"] == "tiny" and doc["context"] == 32 and doc["threads"] == 1
    (run,) = doc["runs"].values()
    assert run["weights"] == "float32" and run["weight_mb"] >= 0 and run["bandwidth_gbs"] > 0
    assert set(run["results"]) == {"1", "4"}  # JSON keys: the row counts
    for r in run["results"].values():
        assert r["wall_p50_ms"] > 0 and r["sampler ms"] >= 0
        assert abs(sum(r[k] for k in ("layer matmuls %", "lm head %", "attention %", "other %")) - 100) < 1
    assert run["prefill_tokens_per_s"]["8"] > 0
    assert "wall_p50_ms" in err  # the human table, on stderr
