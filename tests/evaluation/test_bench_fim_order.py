"""`diffill bench fim-order` (evaluation.bench_fim_order) on a tiny model and a tiny held-out
corpus: every order fills every hole, the typing replay counts its keystrokes, one JSON line last."""
from __future__ import annotations

import json
import os

import torch

from diffusion_core.tokens.infill_formats import FIM_ORDER_ENV
from evaluation import bench_fim_order
from evaluation.tiny_model import make_tiny_model
from .corpus_fixture import write_corpus


def test_two_orders_on_a_tiny_model_print_json_last(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(FIM_ORDER_ENV, raising=False)
    before = torch.get_num_threads()
    model = make_tiny_model(tmp_path / "tiny", seed=0)
    corpus = write_corpus(tmp_path / "corpus")
    try:
        rc = bench_fim_order.main(["--model", str(model), "--heldout", str(corpus / "holdout.jsonl"),
                                   "--n", "4", "--orders", "psm,spm", "--threads", "1", "--max-budget", "4",
                                   "--typing-holes", "1", "--keys", "2", "--typing-budget", "2"])
    finally:
        torch.set_num_threads(before)
    assert rc == 0
    doc = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert doc["bench"] == "fim_order" and doc["model"] == "tiny"
    n = sum(doc["holes"].values())
    assert n >= 1
    for order in ("psm", "spm"):
        entry = doc["quality"][f"all/{order}"]
        assert entry["fills"] == n and 0 <= entry["edit_similarity"] <= 1
    assert doc["quality"]["all/psm"]["same_as_psm"] == 1.0
    assert set(doc["typing"]) == {"psm", "spm"} and all(t["keystrokes"] >= 1 for t in doc["typing"].values())
    assert FIM_ORDER_ENV not in os.environ  # the order it set is put back
