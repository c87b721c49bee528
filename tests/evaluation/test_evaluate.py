"""`diffill bench quality` end to end on a tiny random model, and the pipeline with an oracle engine."""
import argparse
import json
from pathlib import Path

import pytest

from evaluation import bench_quality
from diffusion_core.generation.engine import FillResult, FillStats
from evaluation.heldout import load_files, sample_holes
from evaluation.infilling import load_problems
from diffusion_core.generation.params import FillParams
from evaluation.tiny_model import make_tiny_model
from lsp_server.pipeline import segments_at
from lsp_server.settings import ContextSettings, Settings

from .corpus_fixture import write_corpus

FIXTURE = Path(__file__).parent / "fixtures" / "mini_infilling.jsonl"
QUICK = ["--limit", "4", "--sweep-holes", "2", "--budgets", "4,8", "--thresholds", "0.9", "--topk-steps", "4",
         "--device", "cpu", "--threads", "1"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny"), seed=3)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"))


class OracleEngine:
    """Answers each request with a known text (the truth), as a perfect model would."""

    def __init__(self, answers: dict):
        self.answers = answers

    def fill(self, segments, holes, params=None, on_step=None):
        text = self.answers[tuple(segments)]
        return FillResult([text], FillStats(forward_passes=1))


def _args(**kw):
    base = dict(prefix_bytes=ContextSettings().prefix_bytes, suffix_bytes=ContextSettings().suffix_bytes, budget=0, post="finalize", canonical=False, timeout=20.0,
                memory_mb=1024, dataset=str(FIXTURE))
    base.update(kw)
    return argparse.Namespace(**base)


def test_oracle_engine_scores_one_and_beats_baselines(corpus):
    holes = sample_holes(load_files([corpus / "holdout.jsonl", corpus / "valid.jsonl"]), 16, seed=0)
    args = _args()
    oracle = OracleEngine({tuple(segments_at(h.doc, h.plan, Settings())): h.truth for h in holes})
    out, text = bench_quality.heldout_section(oracle, holes, FillParams(), args, None)
    assert out["holes"] == len(holes)
    for kind, entry in list(out["by_kind"].items()) + [("all", out["all"])]:
        assert entry["model"] == {"exact": 1.0, "edit_sim": 1.0, "valid": 1.0}, kind
        assert entry["empty"]["exact"] == 0.0 and entry["empty"]["edit_sim"] == 0.0
        assert entry["prev_line"]["edit_sim"] < 1.0
    assert "prev_line" in text and "multi-line" in text
    assert sum(v["holes"] for v in out["by_lang"].values()) == len(holes)
    assert out["by_lang"]["python"]["model"]["exact"] == 1.0


@pytest.mark.parametrize("post", ["finalize", "raw"])
def test_oracle_engine_passes_every_problem(post):
    problems = load_problems(FIXTURE)
    oracle = OracleEngine({(p.prompt, p.suffix): p.canonical_solution for p in problems})
    out, text = bench_quality.infilling_section(oracle, FillParams(), _args(post=post), None)
    assert out["problems"] == 5 and out["pass@1"] == 1.0 and out["timeouts"] == 0
    assert out["by_variant"]["single-line"]["problems"] == 2


def test_wrong_answers_fail():
    problems = load_problems(FIXTURE)
    oracle = OracleEngine({(p.prompt, p.suffix): "    pass\n" for p in problems})
    out, _ = bench_quality.infilling_section(oracle, FillParams(), _args(), None)
    assert out["pass@1"] == 0.0


def test_full_run_json_line_and_plot(tiny, corpus, tmp_path, capsys):
    png = tmp_path / "q.png"
    code = bench_quality.main(["--model", str(tiny), "--corpus", str(corpus), "--dataset", str(FIXTURE),
                          "--plot", str(png), "--json", *QUICK])
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = out.strip().split("\n")
    assert len(lines) == 1  # with --json the JSON line is all of stdout
    report = json.loads(lines[0])
    assert report["heldout"]["holes"] == 4
    assert set(report["heldout"]["all"]) >= {"model", "empty", "prev_line", "ms_mean", "forward_passes_mean"}
    assert [p["budget"] for p in report["sweeps"]["budget"]] == [4, 8]
    assert [p["label"] for p in report["sweeps"]["threshold"] + report["sweeps"]["topk"]] == ["thr 0.9", "topk 4"]
    assert all(p["holes"] >= 1 for p in report["sweeps"]["budget"])
    assert report["infilling"]["problems"] == 4 and 0.0 <= report["infilling"]["pass@1"] <= 1.0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "held-out FIM" in err and "held-out:" in err  # tables and progress on stderr


def test_tables_then_json_last_without_quality_word(tiny, corpus, capsys):
    code = bench_quality.main(["--model", str(tiny), "--corpus", str(corpus), "--no-sweeps", *QUICK])
    out, _ = capsys.readouterr()
    assert code == 0
    lines = out.rstrip("\n").split("\n")
    assert "held-out FIM" in out
    report = json.loads(lines[-1])
    assert report["sweeps"] is None and report["infilling"] is None


def test_canonical_harness_check(tiny, capsys):
    code = bench_quality.main(["--model", str(tiny), "--no-heldout", "--dataset", str(FIXTURE), "--canonical", "--json"])
    out, _ = capsys.readouterr()
    assert code == 0
    assert json.loads(out)["infilling"]["pass@1"] == 1.0


def test_missing_corpus_builds_a_heldout_set_at_first_use(tiny, tmp_path, capsys, monkeypatch):
    """The help's quick run on a fresh install: no corpus folder, a small held-out set is
    built once from the machine's installed sources (here: this repository's grammars)."""
    import shutil

    import training.corpus

    site = tmp_path / "site" / "pkg"
    shutil.copytree(Path(__file__).resolve().parents[2] / "grammars", site, ignore=shutil.ignore_patterns("queries", "__pycache__"))
    monkeypatch.setattr(training.corpus, "default_roots", lambda: [("site", site.parent)])
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    argv = ["--model", str(tiny), "--corpus", str(tmp_path / "none"), "--limit", "3", "--no-sweeps", "--json"]
    code = bench_quality.main(argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(out)["heldout"]["holes"] >= 1
    assert "building a small held-out set" in err and "diffill train corpus" in err
    built = tmp_path / "cache" / "diffill" / "heldout"
    assert (built / "valid.jsonl").stat().st_size > 0 and not (built / "train.jsonl").exists()
    assert bench_quality.main(argv) == 0  # the second run reuses it
    assert "building" not in capsys.readouterr()[1]


def test_missing_corpus_and_no_sources_says_how_to_build_one(tiny, tmp_path, capsys, monkeypatch):
    import training.corpus

    monkeypatch.setattr(training.corpus, "default_roots", lambda: [("site", tmp_path / "empty")])
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    code = bench_quality.main(["--model", str(tiny), "--corpus", str(tmp_path / "none"), "--json"])
    _, err = capsys.readouterr()
    assert code == 1
    assert "diffill train corpus --out DIR" in err.strip().splitlines()[-1]


@pytest.mark.parametrize("argv, needle", [
    (["speed"], "unknown command 'speed'"),
    (["quality", "--model", "/nonexistent/model"], "model folder not found"),
    (["quality", "--dataset", "/nonexistent.jsonl", "--no-heldout"], "no such dataset file"),
    (["quality", "--budgets", "4,x", "--no-heldout"], "--budgets"),
    (["quality", "--heldout", "/nonexistent.jsonl"], "no such held-out file"),
    (["quality", "--limit", "-1", "--no-heldout"], "--limit: -1 must not be negative"),
    (["quality", "--budgets", "4,0", "--no-heldout"], "must be positive"),
    (["quality", "--thresholds", "1.5", "--no-heldout"], "threshold"),
])
def test_bad_input_is_one_line(tiny, argv, needle, capsys):
    if "--model" not in argv and argv != ["speed"]:
        argv = argv + ["--model", str(tiny)]
    from diffill.cli import main as cli_main

    code = cli_main(["bench", *argv])
    _, err = capsys.readouterr()
    assert code in (1, 2)
    assert needle in err and len(err.strip().splitlines()) == 1


def test_cli_dispatcher_routes_bench(tiny, capsys):
    from diffill.cli import main as cli_main

    code = cli_main(["bench", "quality", "--model", str(tiny), "--no-heldout", "--dataset", str(FIXTURE), "--canonical",
                     "--limit", "1", "--json"])
    out, _ = capsys.readouterr()
    assert code == 0 and json.loads(out)["infilling"]["problems"] == 1
