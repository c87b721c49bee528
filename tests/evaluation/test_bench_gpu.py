"""`diffill bench gpu` (evaluation.bench_gpu) runs on CPU with a small shape and ends with one JSON line;
its CUDA run skips without a GPU."""
from __future__ import annotations

import json

import pytest
import torch

from evaluation import bench_gpu


def test_small_shape_runs_on_cpu_and_prints_json_last(capsys):
    rc = bench_gpu.main(["--shape", "small", "--device", "cpu", "--contexts", "64", "--budgets", "4",
                         "--strategies", "topk", "--repeats", "1", "--warmup", "0", "--no-default-model"])
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    doc = json.loads(lines[-1])
    assert doc["device_type"] == "cpu" and doc["dtype"] == "float32"
    (row,) = doc["rows"]
    assert row["budget"] == 4 and row["forwards"] == 1 and row["tokens_per_forward"] == 4.0
    assert row["p50_ms"] > 0 and row["floor_ms"] is None  # no bandwidth figure for a CPU
    assert any(line.startswith("random-small") for line in lines[:-1])


def test_random_engine_is_materialised_and_floor_counts_weights_read(tmp_path):
    engine = bench_gpu.random_engine("small", torch.device("cpu"), torch.bfloat16, "natural", 128, tmp_path)
    model = engine.model
    assert all(p.device.type == "cpu" and p.dtype == torch.bfloat16 for p in model.parameters())
    assert torch.isfinite(model.inv_freq).all() and model.inv_freq[0] == 1.0
    everything = sum(p.numel() * 2 for p in model.parameters())
    assert bench_gpu.weight_bytes_per_forward(model) == everything - model.embed_tokens.weight.numel() * 2


def test_bandwidth_lookup_prefers_the_override():
    assert bench_gpu.hbm_gbps(torch.device("cpu"), 1000.0) == 1000.0
    assert bench_gpu.hbm_gbps(torch.device("cpu"), None) is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_small_shape_on_cuda_reports_the_bandwidth_floor(capsys):
    rc = bench_gpu.main(["--shape", "small", "--device", "cuda", "--contexts", "64", "--budgets", "4",
                         "--strategies", "topk", "--repeats", "1", "--warmup", "1", "--no-default-model"])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    (row,) = doc["rows"]
    assert doc["device_type"] == "cuda" and doc["dtype"] == "bfloat16" and row["peak_mem_gib"] > 0
    assert row["p50_ms"] > 0 and row["forwards"] == 1


def test_the_old_no_bundled_flag_still_skips_the_default_model():
    base = ["--shape", "small", "--device", "cpu"]
    assert bench_gpu.parse_args(base + ["--no-default-model"]).no_default_model
    assert bench_gpu.parse_args(base + ["--no-bundled"]).no_default_model  # its name before the default left the package
    assert not bench_gpu.parse_args(base).no_default_model
