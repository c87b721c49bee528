"""FIM orders of the causal layout (issue 13, item 2): each order's frame token by token, the
engine filling in the selected order exactly as transformers' greedy generate on that frame,
and typing (the prefix growing at its end) reusing the cached context in the suffix-first
orders while PSM re-encodes the suffix window every keystroke.

The model is test_causal's tiny random Qwen2ForCausalLM, loaded through the causal-LM converter.
"""
from __future__ import annotations

import pytest
import torch

from diffusion_core.tokens import infill_formats as fmts
from diffusion_core.generation.engine import Engine, HoleSpec
from diffusion_core.errors import CoreError
from diffusion_core.generation.params import FillParams
from diffusion_core.tokens.tokenizer import SpecialIds

transformers = pytest.importorskip("transformers")
from test_causal import PREFIX, SUFFIX, make_causal_lm  # noqa: E402  (needs transformers)

SP = SpecialIds(mask=9, eos=1, pre=3, suf=4, mid=5)


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    return make_causal_lm(tmp_path_factory.mktemp("qwen2_fim_order"), seed=3)


@pytest.fixture(scope="module")
def engine(qwen_dir):
    return Engine.load(qwen_dir, "cpu", dtype=torch.float32)


def test_each_order_frames_prefix_and_suffix_as_published(monkeypatch):
    monkeypatch.delenv(fmts.FIM_ORDER_ENV, raising=False)
    pre, suf = [10, 11], [12, 13, 14]
    assert fmts.causal_context(pre, suf, SP, "psm") == [3, 10, 11, 4, 12, 13, 14, 5]
    assert fmts.causal_context(pre, suf, SP, "spm") == [4, 12, 13, 14, 3, 10, 11, 5]
    assert fmts.causal_context(pre, suf, SP, "spm-variant") == [3, 4, 12, 13, 14, 5, 10, 11]
    assert fmts.causal_context(pre, suf, SP) == fmts.causal_context(pre, suf, SP, fmts.DEFAULT_FIM_ORDER)
    assert fmts.DEFAULT_FIM_ORDER in fmts.FIM_ORDERS
    # Empty segments keep every marker.
    for order in fmts.FIM_ORDERS:
        assert sorted(fmts.causal_context([], [], SP, order)) == [3, 4, 5]


def test_suffix_first_orders_only_append_when_the_prefix_grows():
    pre, suf = [10, 11], [12, 13, 14]
    for order in ("spm", "spm-variant"):
        a = fmts.causal_context(pre, suf, SP, order)
        b = fmts.causal_context(pre + [15], suf, SP, order)
        # everything before the old context's last token survives a keystroke
        tail = 1 if order == "spm" else 0  # spm ends in <|fim_middle|>, after the prefix
        assert b[: len(a) - tail] == a[: len(a) - tail]
    a, b = fmts.causal_context(pre, suf, SP, "psm"), fmts.causal_context(pre + [15], suf, SP, "psm")
    assert b[: len(pre) + 1] == a[: len(pre) + 1] and b[len(pre) + 1:] != a[len(pre) + 1:]


def test_the_switch_selects_the_order_and_a_bad_one_is_one_line(monkeypatch):
    monkeypatch.setenv(fmts.FIM_ORDER_ENV, "spm-variant")
    assert fmts.causal_context([10], [12], SP) == [3, 4, 12, 5, 10]
    assert fmts.causal_context([10], [12], SP, "psm") == [3, 10, 4, 12, 5]  # an explicit order wins
    monkeypatch.setenv(fmts.FIM_ORDER_ENV, "pms")
    with pytest.raises(CoreError, match="'pms' is not one of psm, spm, spm-variant"):
        fmts.causal_context([10], [12], SP)


def hf_greedy(folder, eng: Engine, prefix: str, suffix: str, budget: int, order: str) -> list[int]:
    """transformers' greedy generation on the order's frame, with the engine's end and banned ids."""
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tok = eng.tokenizer
    prompt = fmts.causal_context(tok.encode(prefix), tok.encode(suffix), tok.special, order)
    out = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                         max_new_tokens=budget, do_sample=False, eos_token_id=list(eng.end_ids),
                         suppress_tokens=list(eng.banned), pad_token_id=tok.special.eos)
    new = out[0, len(prompt):].tolist()
    return next((new[:i] for i, t in enumerate(new) if t in eng.end_ids), new)


@pytest.mark.parametrize("order", ["spm", "spm-variant"])
def test_engine_fills_in_the_selected_order(qwen_dir, engine, order, monkeypatch):
    monkeypatch.setenv(fmts.FIM_ORDER_ENV, order)
    expected = hf_greedy(qwen_dir, engine, PREFIX, SUFFIX, 12, order)
    for cache in ("none", "auto"):
        res = engine.fill([PREFIX, SUFFIX], [HoleSpec(12)], FillParams(strategy="ar", cache=cache))
        assert res.token_ids[0] == expected
    assert expected != hf_greedy(qwen_dir, engine, PREFIX, SUFFIX, 12, "psm")  # the order reached the model


def typed_encodes(engine: Engine, typed: str, heal: str = "on") -> list[tuple[int, int]]:
    """(context tokens, tokens encoded) of each keystroke's fill after the first, cold one."""
    engine.forget_contexts()
    out = []
    for k in range(len(typed) + 1):
        res = engine.fill([PREFIX + typed[:k], SUFFIX], [HoleSpec(4)], FillParams(strategy="ar", heal=heal))
        if k:
            out.append((res.stats.context_tokens, res.stats.context_tokens - res.stats.reused_tokens))
    return out


@pytest.mark.parametrize("order", ["spm", "spm-variant"])
def test_typing_reuses_the_cache_in_suffix_first_order(engine, order, monkeypatch):
    typed = "x + self.y"
    suffix_tokens = len(engine.tokenizer.encode(SUFFIX))
    # Without token healing: with it, a keystroke inside a word backs the prompt up to the
    # word's start, so even PSM's context is often the previous keystroke's.
    monkeypatch.setenv(fmts.FIM_ORDER_ENV, "psm")
    psm = typed_encodes(engine, typed, heal="off")
    monkeypatch.setenv(fmts.FIM_ORDER_ENV, order)
    first = typed_encodes(engine, typed, heal="off")
    # PSM: the whole suffix window after the typed point, every keystroke.
    assert all(enc > suffix_tokens for _, enc in psm)
    # Suffix first: only the retokenized tail of the prefix (and spm's closing marker).
    assert all(enc <= 4 for _, enc in first), first
    assert sum(enc for _, enc in first) * 3 < sum(enc for _, enc in psm)
    assert all(enc <= 4 for _, enc in typed_encodes(engine, typed)), "healed"
    # The cache never changes a fill: cold and warm agree.
    warm = engine.fill([PREFIX + typed, SUFFIX], [HoleSpec(8)], FillParams(strategy="ar"))
    cold = engine.fill([PREFIX + typed, SUFFIX], [HoleSpec(8)], FillParams(strategy="ar", cache="none"))
    assert warm.token_ids == cold.token_ids
