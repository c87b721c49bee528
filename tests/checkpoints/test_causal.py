"""The causal layout (a pretrained AR FIM coder) in the engine: AR-exact against transformers'
greedy `generate`, cached against uncached, lossless equal to AR-exact, stop rules, guards.

The model is a tiny random HF Qwen2ForCausalLM (or Llama) saved by transformers itself and
loaded through diffill's plain causal-LM converter.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from ckpt_fixtures import _tokenizer_config, write_tokenizer
from diffusion_core.generation import causal
from diffusion_core.tokens.infill_formats import causal_context
from diffusion_core.loading.checkpoints import converter_for, convert_causal_lm
from diffusion_core.generation.engine import Engine, HoleSpec
from diffusion_core.errors import CoreError
from diffusion_core.generation.params import FillParams

transformers = pytest.importorskip("transformers")

QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|fim_prefix|>", "<|fim_middle|>",
                 "<|fim_suffix|>", "<|fim_pad|>", "<|file_sep|>", "<|vision_pad|>"]

PREFIX = "def add(a, b):\n    return a + b\n\nclass Point:\n    def __init__(self, x, y):\n        self.x = "
SUFFIX = "\n        self.y = y\n\nfor i in range(10):\n    print(i)\n"


def make_causal_lm(folder: Path, seed: int = 0, arch: str = "qwen2") -> Path:
    """A tiny random Qwen2ForCausalLM / LlamaForCausalLM folder, written by transformers."""
    folder.mkdir(parents=True, exist_ok=True)
    ids = write_tokenizer(folder, QWEN_SPECIALS)
    vocab = max(ids.values()) + 1 + 5  # padded past the tokenizer, as the real 151936 > 151665
    common = dict(vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, rms_norm_eps=1e-6,
                  tie_word_embeddings=False, eos_token_id=ids["<|endoftext|>"], bos_token_id=ids["<|endoftext|>"])
    if arch == "qwen2":
        model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(rope_theta=1e6, **common))
    else:
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(rope_theta=1e4, **common))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            else:  # large enough that a random model has peaked, seed-specific logits
                p.copy_(torch.randn(p.shape, generator=gen) * (1.0 if "embed" in name else 0.2))
    model.save_pretrained(folder)
    tok_cfg = _tokenizer_config(ids, eos="<|endoftext|>", pad="<|endoftext|>")
    (folder / "tokenizer_config.json").write_text(json.dumps(tok_cfg))
    return folder


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    return make_causal_lm(tmp_path_factory.mktemp("qwen2"), seed=3)


@pytest.fixture(scope="module")
def engine(qwen_dir):
    return Engine.load(qwen_dir, "cpu", dtype=torch.float32)


def hf_greedy(folder: Path, eng: Engine, prefix: str, suffix: str, budget: int) -> list[int]:
    """transformers' own greedy FIM generation (PSM), with the engine's end and banned ids."""
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    sp, tok = eng.tokenizer.special, eng.tokenizer
    prompt = causal_context(tok.encode(prefix), tok.encode(suffix), sp)  # the default FIM order
    out = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                         max_new_tokens=budget, do_sample=False, eos_token_id=list(eng.end_ids),
                         suppress_tokens=list(eng.banned), pad_token_id=sp.eos)
    new = out[0, len(prompt):].tolist()
    return next((new[:i] for i, t in enumerate(new) if t in eng.end_ids), new)


def fill(eng: Engine, segments: list[str], holes, **params):
    return eng.fill(segments, [h if isinstance(h, HoleSpec) else HoleSpec(h) for h in holes], FillParams(**params))


# -- loading ---------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_plain_causal_lm_folder_loads_as_the_causal_layout(tmp_path, arch):
    folder = make_causal_lm(tmp_path / arch, arch=arch)
    assert converter_for(folder) is convert_causal_lm
    eng = Engine.load(folder, "cpu", dtype=torch.float32)
    cfg, sp = eng.config, eng.tokenizer.special
    assert (cfg.layout, cfg.model_type, cfg.attention_bias, cfg.logits_shift) == ("causal", arch, arch == "qwen2", True)
    assert sp.mask == eng.tokenizer.token_to_id("<|vision_pad|>")
    ends = {eng.tokenizer.token_to_id(t) for t in ("<|endoftext|>", "<|fim_pad|>", "<|file_sep|>", "<|im_end|>")}
    assert ends <= set(eng.end_ids)
    assert {sp.mask, sp.pre, sp.suf, sp.mid} <= set(eng.banned)


# -- AR-exact --------------------------------------------------------------------------------

@pytest.mark.parametrize("budget", [1, 7, 24])
def test_ar_exact_equals_transformers_greedy_generate(qwen_dir, engine, budget):
    expected = hf_greedy(qwen_dir, engine, PREFIX, SUFFIX, budget)
    res = fill(engine, [PREFIX, SUFFIX], [budget], strategy="ar", cache="none")
    assert res.token_ids[0] == expected
    res = fill(engine, [PREFIX, SUFFIX], [budget], strategy="ar")
    assert res.token_ids[0] == expected
    assert res.texts[0] == engine.tokenizer.decode(expected)


def test_llama_ar_exact_equals_transformers_greedy_generate(tmp_path):
    folder = make_causal_lm(tmp_path / "llama", seed=5, arch="llama")
    eng = Engine.load(folder, "cpu", dtype=torch.float32)
    expected = hf_greedy(folder, eng, PREFIX, SUFFIX, 16)
    assert fill(eng, [PREFIX, SUFFIX], [16], strategy="ar").token_ids[0] == expected


def test_cached_step_forwards_only_new_tokens(engine):
    """The per-step cost must not grow with the hole: each AR step forwards one token."""
    seen = []
    orig = engine.model.forward_packed

    def spy(ids, pos, segments, out_rows=None):
        seen.append(len(ids))
        return orig(ids, pos, segments, out_rows)

    engine.model.forward_packed = spy
    try:
        res = fill(engine, ["x" + PREFIX, SUFFIX], [20], strategy="ar")
    finally:
        engine.model.forward_packed = orig
    steps = seen[-res.stats.forward_passes:]
    assert steps == [1] * len(steps)


def test_context_reuse_across_requests_keeps_the_output(engine):
    a = fill(engine, [PREFIX + "1", SUFFIX], [12], strategy="ar")
    b = fill(engine, [PREFIX + "1", SUFFIX], [12], strategy="ar")
    assert b.stats.reused_tokens > 0 and b.token_ids == a.token_ids
    fresh = Engine(engine.loaded)
    assert fill(fresh, [PREFIX + "1", SUFFIX], [12], strategy="ar").token_ids == a.token_ids


def test_several_holes_fill_left_to_right_with_earlier_fills_in_the_prefix(qwen_dir, engine):
    mid = "\n        self.z = "
    res = fill(engine, [PREFIX, mid, SUFFIX], [6, 5], strategy="ar")
    first = hf_greedy(qwen_dir, engine, PREFIX, mid + SUFFIX, 6)
    assert res.token_ids[0] == first
    second = hf_greedy(qwen_dir, engine, PREFIX + res.texts[0] + mid, SUFFIX, 5)
    # The engine joins token lists, not texts: compare against the same token prefix.
    eng_prefix = engine.tokenizer.encode(PREFIX) + res.token_ids[0] + engine.tokenizer.encode(mid)
    if eng_prefix == engine.tokenizer.encode(PREFIX + res.texts[0] + mid):
        assert res.token_ids[1] == second
    assert len(res.texts) == 2


# -- lossless and threshold ------------------------------------------------------------------

def repetitive_prompt(rng: random.Random) -> tuple[str, str]:
    lines = [f"    x{rng.randint(0, 3)} = self.y{rng.randint(0, 3)} + {rng.randint(0, 9)}\n" for _ in range(rng.randint(2, 6))]
    body = "".join(lines * rng.randint(1, 3))
    return "class A:\n  def f(self):\n" + body + "    x", "\n    return x\n" + body


@pytest.mark.parametrize("seed", range(6))
def test_lossless_equals_ar_exact(qwen_dir, seed):
    rng = random.Random(seed)
    eng = Engine.load(qwen_dir, "cpu", dtype=torch.float32)
    total_fwd = total_tok = 0
    for trial in range(4):
        prefix, suffix = repetitive_prompt(rng) if trial % 2 else (PREFIX[: rng.randint(5, len(PREFIX))], SUFFIX)
        budget = rng.randint(1, 40)
        ar = fill(eng, [prefix, suffix], [budget], strategy="ar")
        ll = fill(eng, [prefix, suffix], [budget], strategy="lossless", seed=seed)
        assert ll.token_ids == ar.token_ids and ll.texts == ar.texts
        assert ll.stats.forward_passes <= ar.stats.forward_passes
        total_fwd, total_tok = total_fwd + ll.stats.forward_passes, total_tok + ll.stats.tokens_committed
    print(f"seed {seed}: lossless {total_tok / max(total_fwd, 1):.2f} tokens per forward")


def test_lossless_accepts_copied_ngrams(engine, monkeypatch):
    """A hole that repeats the context: the model copies, the n-gram drafts are accepted."""
    # PSM: the copy sits right after the context's first PREFIX (this random model copies there).
    monkeypatch.setenv("DIFFILL_FIM_ORDER", "psm")
    ar = fill(engine, [PREFIX, SUFFIX], [30], strategy="ar")
    text = engine.tokenizer.decode(ar.token_ids[0])
    # Put the model's own continuation in the context, so prompt lookup proposes it.
    prefix = PREFIX + text + "\n" + PREFIX
    ar = fill(engine, [prefix, SUFFIX], [30], strategy="ar")
    ll = fill(engine, [prefix, SUFFIX], [30], strategy="lossless")
    assert ll.token_ids == ar.token_ids
    assert ll.stats.forward_passes < ar.stats.forward_passes


def test_prompt_lookup_proposes_what_followed_the_latest_match():
    assert causal.prompt_lookup([1, 2, 3, 9, 1, 2, 3, 4, 5, 6, 2, 3], 3, 2) == [4, 5]
    assert causal.prompt_lookup([7, 8, 9], 3, 4) == []
    assert causal.prompt_lookup([5, 1, 6, 5], 2, 2) == [1, 6]


def test_threshold_commits_at_least_one_and_finishes(engine):
    for tau in (0.0, 0.7, 1.0):
        res = fill(engine, [PREFIX, SUFFIX], [20], strategy="threshold", threshold=tau)
        assert res.stats.forward_passes <= 21
    # tau 1.0 keeps only exact agreements: the AR output.
    ar = fill(engine, [PREFIX, SUFFIX], [20], strategy="ar")
    assert fill(engine, [PREFIX, SUFFIX], [20], strategy="threshold", threshold=1.0).token_ids == ar.token_ids


def test_causal_only_strategies_are_refused_elsewhere(tmp_path):
    from evaluation.tiny_model import make_tiny_model

    eng = Engine.load(make_tiny_model(tmp_path / "own"), "cpu")
    with pytest.raises(CoreError, match="strategy"):
        fill(eng, ["a", "b"], [4], strategy="lossless")


# -- stop rules --------------------------------------------------------------------------------

def test_stop_rule_ends_the_hole_at_its_line(engine):
    free = fill(engine, [PREFIX, SUFFIX], [40], strategy="ar")
    text = free.texts[0]
    if "\n" not in text.strip("\n"):
        pytest.skip("this random model writes no second line")
    one = fill(engine, [PREFIX, SUFFIX], [HoleSpec(40, max_lines=1)], strategy="ar")
    first_line = next(i for i, ln in enumerate(text.split("\n")) if ln.strip())
    assert one.texts[0] == "\n".join(text.split("\n")[: first_line + 1])
    assert one.stats.forward_passes < free.stats.forward_passes
    ll = fill(engine, [PREFIX, SUFFIX], [HoleSpec(40, max_lines=1)], strategy="lossless")
    assert ll.texts == one.texts


# -- guards ------------------------------------------------------------------------------------

def _poison(folder: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(folder, dst)
    t = load_file(str(dst / "model.safetensors"))
    t["model.norm.weight"][3] = float("nan")
    save_file(t, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


@pytest.mark.parametrize("strategy", ["ar", "lossless", "threshold"])
def test_nan_weight_fails_with_one_line_naming_the_model(qwen_dir, tmp_path, strategy):
    eng = Engine.load(_poison(qwen_dir, tmp_path / "nan"), "cpu", dtype=torch.float32)
    with pytest.raises(CoreError, match="non-finite logits") as e:
        fill(eng, [PREFIX, SUFFIX], [30], strategy=strategy)
    assert "nan" in str(e.value) and "\n" not in str(e.value)


def test_negative_norm_eps_is_refused_or_stopped(qwen_dir, tmp_path):
    import shutil

    dst = tmp_path / "eps"
    shutil.copytree(qwen_dir, dst)
    c = json.loads((dst / "config.json").read_text())
    c["rms_norm_eps"] = -1
    (dst / "config.json").write_text(json.dumps(c))
    with pytest.raises(CoreError, match="rms_norm_eps|non-finite"):
        eng = Engine.load(dst, "cpu", dtype=torch.float32)
        fill(eng, [PREFIX, SUFFIX], [30], strategy="ar")


def test_accept_rule_of_each_strategy():
    drafts, y = [4, 5, 6], [4, 9, 6, 7]  # the second draft disagrees with the model
    near = [False, True, False]  # ... but the model finds it nearly as likely as its own 9
    assert causal.accepted(drafts, y, near, FillParams(strategy="ar")) == 0
    assert causal.accepted(drafts, y, near, FillParams(strategy="lossless")) == 1
    assert causal.accepted(drafts, y, near, FillParams(strategy="threshold")) == 3  # 4, 5 (near), 6
    assert causal.accepted(drafts, y, [False] * 3, FillParams(strategy="threshold")) == 1
    # topk's schedule forces 3 tokens (2 drafts + the model's next); the third draft agrees anyway.
    assert causal.accepted(drafts, y, [False] * 3, FillParams(strategy="topk"), forced=3) == 3
    assert causal.accepted(drafts, [4, 9, 8, 7], [False] * 3, FillParams(strategy="topk"), forced=3) == 2
