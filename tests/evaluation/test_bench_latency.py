"""`diffill bench latency` (evaluation.bench_latency): one small case on the CPU, cold and
warm, ends with one JSON line of real figures."""
from __future__ import annotations

import json

import torch

from evaluation import bench_latency

torch.set_num_threads(1)


def test_one_case_cold_and_warm_prints_json_last(capsys):
    rc = bench_latency.main(["--device", "cpu", "--contexts", "64", "--holes", "4", "--repeats", "1"])
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    doc = json.loads(lines[-1])
    assert doc["bench"] == "diffusion_core" and doc["device"] == "cpu"
    assert doc["model"]["parameters"] > 1e6  # the ~20M random model, not a tiny one
    cold, warm = doc["rows"]
    assert (cold["cache"], warm["cache"]) == ("cold", "warm")
    for row in (cold, warm):
        assert row["context"] == 64 and row["hole"] == 4 and row["p50_ms"] > 0
        assert row["forward_passes"] == 1 and row["tokens_per_forward"] == 4.0  # topk: budget / 4 steps
    assert warm["reused_tokens"] > 0 == cold["reused_tokens"]
    assert lines[1].split()[:3] == ["context", "hole", "cache"]  # the human table before the JSON
