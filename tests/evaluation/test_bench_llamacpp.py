"""`diffill bench llamacpp` (evaluation.bench_llamacpp): the summary per kind from a stand-in
peer (llama-cpp-python is a benchmark-only extra), and the real peer's run, which skips
without llama_cpp."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json

import pytest

from evaluation import bench_llamacpp
from evaluation.peer_llamacpp import PeerStats
from .corpus_fixture import write_corpus


class StandInPeer:
    """Answers every hole with `pass` after 3 prompt tokens, the shape of LlamaCppPeer."""

    def __init__(self, gguf, threads, n_ctx, prompt_cache):
        self.threads, self.n_ctx, self.prompt_cache = threads, n_ctx, prompt_cache
        self.asked = []

    def fill(self, prefix, suffix, budget, single_line=False, *, max_lines=0, dedent_below=-1, min_depth=1):
        self.asked.append(budget)
        return "pass", PeerStats(ms=5.0, prompt_ms=2.0, prompt_tokens=3, prompt_eval_tokens=3, first_token_ms=3.0,
                                 decode_ms=1.0, tokens=1, forwards=2, ended="end")

    def info(self):
        return {"n_ctx": self.n_ctx, "threads": self.threads, "prompt_cache": self.prompt_cache}


def test_summary_per_kind_from_a_stand_in_peer(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench_llamacpp, "LlamaCppPeer", StandInPeer)
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.0-stand-in")
    corpus = write_corpus(tmp_path / "corpus")
    gguf = tmp_path / "model.gguf"
    rc = bench_llamacpp.main(["--gguf", str(gguf), "--heldout", str(corpus / "holdout.jsonl"), "--n", "1",
                              "--threads", "1", "--max-budget", "8"])
    assert rc == 0
    out, err = capsys.readouterr()
    doc = json.loads(out.strip().splitlines()[-1])
    assert doc["bench"] == "llamacpp" and doc["gguf"] == "model.gguf" and doc["threads"] == 1
    assert doc["prompts_same_as_diffill"] is None  # a --gguf of its own: no diffill prompt to compare
    assert doc["holes"] == sum(r["fills"] for r in doc["results"].values()) >= 1
    for r in doc["results"].values():
        assert r["p50_ms"] == 5.0 and r["ms_per_decode_token"] == 1.0 and r["ended"]["end"] == r["fills"]
        assert 0 <= r["edit_similarity"] <= 1
    assert "p50 ms" in err  # the human table, on stderr


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="needs llama-cpp-python (pip install -e .[llamacpp])")
def test_the_real_peer_on_one_hole_per_kind(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus")
    assert bench_llamacpp.main(["--heldout", str(corpus / "holdout.jsonl"), "--n", "1", "--threads", "2",
                                "--max-budget", "8"]) == 0
    doc = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert doc["bench"] == "llamacpp" and doc["peer"].startswith("llama-cpp-python ")
    assert all(r["p50_ms"] > 0 for r in doc["results"].values())
