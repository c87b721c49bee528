"""Training recipe: corpus filters and splits, tokenizer, objective layout, a few trainer steps with resume."""
import json
import random
from pathlib import Path

import pytest
import torch

from diffusion_core.network.config import DEFAULT_SPECIAL_TOKENS
from diffusion_core.tokens.layout import full_mask
from diffusion_core.tokens.tokenizer import Tokenizer
from training import corpus
from training.bpe import train_bpe
from training.objective import (EDITOR_BUDGETS, MAX_TRAIN_HOLE_TOKENS, batch_mask, collate, hole_budget, loss_fn,
                                            make_causal_example, make_example)
from training.trainer import TrainConfig, lr_at, train

torch.set_num_threads(1)

CODE = '''import os


def walk(root):
    """Yield every file below root."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
            if name.endswith(".py"):
                yield os.path.join(dirpath, name)


class Counter:
    def __init__(self):
        self.n = 0

    def add(self, k=1):
        self.n += k
        return self.n
'''


def write_tree(root: Path) -> None:
    pkg = root / "site" / "mypkg"
    pkg.mkdir(parents=True)
    for i in range(12):
        (pkg / f"mod{i}.py").write_text(CODE.replace("Counter", f"Counter{i}").replace("walk", f"walk_{i}") + f"\nX = {i}\n")
    (pkg / "copy.py").write_text((pkg / "mod0.py").read_text())  # exact duplicate
    (pkg / "tiny.py").write_text("x = 1\n")  # too small
    (pkg / "gen.py").write_text("# This file is auto-generated. Do not edit.\n" + CODE)
    (pkg / "minified.py").write_text("x=1;" * 400 + "\n")  # one very long line
    (pkg / "binary.py").write_bytes(b"\x00\xff" * 200)


@pytest.fixture(scope="module")
def tok_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    train_bpe([CODE] * 20, vocab_size=400, min_frequency=1).save(str(path))
    return path


def test_corpus_filters_dedups_and_splits_deterministically(tmp_path):
    write_tree(tmp_path)
    roots = [("site", tmp_path / "site")]
    stats = corpus.build(tmp_path / "out", roots, log=lambda m: None)
    c = stats["counts"]
    assert c["exact_dup"] == 1 and c["filtered"] >= 3 and c["unreadable"] == 1
    assert c.get("near_dup", 0) >= 1  # the twelve modules differ in two names only
    texts = [json.loads(l)["text"] for s in ("train", "valid", "holdout") for l in open(tmp_path / "out" / f"{s}.jsonl")]
    assert not any("auto-generated" in t or t.startswith("x=1;") for t in texts)
    again = corpus.build(tmp_path / "out2", roots, log=lambda m: None)
    assert again == {**stats, "roots": again["roots"]}
    assert corpus.split_of("mypkg", "abc") == corpus.split_of("mypkg", "abc")


def test_tokenizer_has_special_tokens_and_indentation_runs(tok_path):
    tok = Tokenizer(tok_path, DEFAULT_SPECIAL_TOKENS)
    sp = tok.special
    assert len({sp.mask, sp.eos, sp.bos, sp.suf, sp.pre, sp.mid, sp.hole}) == 7
    text = "        return self.n\n"
    assert tok.decode(tok.encode(text)) == text
    assert len(tok.encode("        ")) <= 2  # a run of spaces is not eight tokens


def test_example_layout_puts_targets_in_holes(tok_path):
    tok = Tokenizer(tok_path, DEFAULT_SPECIAL_TOKENS)
    sp = tok.special
    rng = random.Random(3)
    seen = 0
    for _ in range(30):
        ex = make_example(CODE, "python", tok, sp, 256, rng)
        if ex is None:
            continue
        seen += 1
        assert len(ex.ids) <= 256 and ex.ids[ex.n_context] == sp.mid
        for s, e in ex.holes:
            hole = ex.ids[s:e]
            assert sp.mask not in hole
            n_text = next((i for i, t in enumerate(hole) if t == sp.eos), len(hole))
            assert all(t == sp.eos for t in hole[n_text:])  # padded with end tokens
    assert seen > 20


def test_hole_budgets_cover_editor_sizes_and_near_lengths():
    rng = random.Random(0)
    for n in (1, 3, 20, 33, 70, 127, 128, 200):
        got = [hole_budget(n, rng) for _ in range(400)]
        assert all(b >= n for b in got) and all(b <= max(n, MAX_TRAIN_HOLE_TOKENS) for b in got)
        editor = min((b for b in EDITOR_BUDGETS if b >= n), default=None)
        if editor is not None and 2 * n + 8 < editor:  # the two regimes do not overlap
            near = [b for b in got if b <= 2 * n + 8]
            # Both regimes: the editor's size for such a hole, and sizes near its length.
            assert 120 < got.count(editor) < 280 and len(near) > 120
    # A 3-token rest of line is trained with the 32-token hole the line planner asks for.
    assert EDITOR_BUDGETS[0] == 32 and 32 in {hole_budget(3, rng) for _ in range(50)}


def test_collate_masks_only_hole_tokens_and_weights_them(tok_path):
    tok = Tokenizer(tok_path, DEFAULT_SPECIAL_TOKENS)
    sp = tok.special
    rng = random.Random(0)
    exs = [e for e in (make_example(CODE, "python", tok, sp, 256, rng) for _ in range(8)) if e][:4]
    x, pos, mask, targets, weights = collate(exs, sp, torch.Generator().manual_seed(0), ar_weight=0.5)
    for b, ex in enumerate(exs):
        n = len(ex.ids)
        noisy = (x[b, :n] == sp.mask).nonzero().flatten().tolist()
        in_holes = {p for s, e in ex.holes for p in range(s, e)}
        assert set(noisy) <= in_holes
        assert all(weights[b, p - 1] > 0 for p in noisy)  # row p-1 predicts token p
        assert torch.equal(mask[b, 0, :n, :n], full_mask("diffill", ex.n_context, n))
    assert torch.isfinite(loss_fn(torch.randn(*x.shape, tok.vocab_size), targets, weights))
    assert torch.equal(batch_mask(torch.tensor([3]), torch.tensor([5]), 5)[0, 0], full_mask("diffill", 3, 5))


def test_causal_warmup_examples_are_plain_windows_and_train(tmp_path, tok_path):
    tok = Tokenizer(tok_path, DEFAULT_SPECIAL_TOKENS)
    sp = tok.special
    ex = make_causal_example(CODE, tok, sp, 64, random.Random(0))
    assert ex.ids[0] == sp.bos and ex.n_context == len(ex.ids) <= 64 and ex.holes == []
    assert tok.decode(ex.ids[1:]) in CODE
    x, pos, mask, targets, weights = collate([ex], sp, torch.Generator().manual_seed(0), ar_weight=1.0)
    assert torch.equal(x[0], torch.tensor(ex.ids))  # nothing masked
    assert weights.sum().item() == pytest.approx(1.0)  # every next token, averaged
    (tmp_path / "corpus").mkdir()
    with open(tmp_path / "corpus" / "train.jsonl", "w") as f:
        f.write(json.dumps({"text": CODE, "lang": "python", "path": "a", "package": "p"}) + "\n")
    seen = []
    import training.trainer as trainer
    real = trainer.make_causal_example
    trainer.make_causal_example = lambda *a: seen.append(1) or real(*a)
    try:
        train(TrainConfig(corpus=str(tmp_path / "corpus"), tokenizer=str(tok_path), out=str(tmp_path / "run"),
                          hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                          intermediate_size=64, seq_len=128, batch_size=2, max_steps=4, causal_frac=0.5,
                          log_every=100, device="cpu"), log=lambda m: None)
    finally:
        trainer.make_causal_example = real
    assert len(seen) == 4  # two steps of two plain windows, then the infill objective


def test_lr_schedules():
    cfg = TrainConfig(corpus="", tokenizer="", out="", lr=1.0, warmup_steps=10, min_lr_ratio=0.1, decay_frac=0.5)
    assert lr_at(0, 100, cfg) == pytest.approx(0.1)
    assert lr_at(40, 100, cfg) == 1.0 and lr_at(99, 100, cfg) < 0.15
    cos = TrainConfig(corpus="", tokenizer="", out="", lr=1.0, warmup_steps=0, schedule="cosine", min_lr_ratio=0.0)
    assert lr_at(50, 100, cos) == pytest.approx(0.5, abs=0.02)


def test_a_few_steps_lower_the_loss_and_resume_continues(tmp_path, tok_path):
    (tmp_path / "corpus").mkdir()
    with open(tmp_path / "corpus" / "train.jsonl", "w") as f:
        for i in range(8):
            f.write(json.dumps({"text": CODE, "lang": "python", "path": f"{i}", "package": "p"}) + "\n")
    base = dict(corpus=str(tmp_path / "corpus"), tokenizer=str(tok_path), out=str(tmp_path / "run"),
                hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                intermediate_size=64, seq_len=128, batch_size=4, warmup_steps=2, lr=1e-2, save_every=3,
                log_every=100, device="cpu")
    logs = []
    train(TrainConfig(**base, max_steps=3), log=logs.append)
    state = json.loads((tmp_path / "run" / "trainer_state.json").read_text())
    assert state["step"] == 3 and (tmp_path / "run" / "optimizer.safetensors").exists()
    train(TrainConfig(**base, max_steps=6), log=logs.append)
    assert "from step 3" in logs[-1] or any("from step 3" in m for m in logs)
    assert json.loads((tmp_path / "run" / "trainer_state.json").read_text())["step"] == 6
    from diffusion_core.generation.engine import Engine, HoleSpec
    res = Engine.load(tmp_path / "run" / "model", "cpu").fill(["def f():\n    return ", "\n"], [HoleSpec(4)])
    assert len(res.texts) == 1
    from training.ship import ship
    from diffusion_core.loading.loader import load_model
    total = ship(tmp_path / "run", tmp_path / "shipped")
    shipped = load_model(tmp_path / "shipped", "cpu")
    trained = load_model(tmp_path / "run" / "model", "cpu")
    assert total > 0 and shipped.model.embed_tokens.weight.dtype == torch.float32
    w_ship, w_run = shipped.model.embed_tokens.weight, trained.model.embed_tokens.weight
    assert torch.allclose(w_ship, w_run, rtol=1e-2, atol=1e-3)  # bf16 on disk
