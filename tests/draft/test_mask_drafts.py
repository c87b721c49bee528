"""Mask drafts in the causal layout: lossless stays AR-exact with any adapter, and the mask
rows' predictions line up with the tokens they draft (an oracle drafter is accepted whole)."""
from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "checkpoints"))

from diffusion_core.generation.draft_adapter import AdapterSpec, MaskAdapter  # noqa: E402
from diffusion_core.generation.engine import Engine, HoleSpec  # noqa: E402
from diffusion_core.generation.params import FillParams  # noqa: E402

pytest.importorskip("transformers")
from test_causal import PREFIX, SUFFIX, make_causal_lm, repetitive_prompt  # noqa: E402


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    eng = Engine.load(make_causal_lm(tmp_path_factory.mktemp("qwen2"), seed=3), "cpu", dtype=torch.float32)
    assert eng.drafter is None  # no adapter ships for a random model
    return eng


def with_random_drafter(eng: Engine, k: int, seed: int) -> MaskAdapter:
    a = MaskAdapter(eng.model, AdapterSpec(4, 8.0, k, eng.tokenizer.special.mask))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in a.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    eng.drafter = a.attach(eng.model)
    return a


def fill(eng, prefix, suffix, budget, **params):
    return eng.fill([prefix, suffix], [HoleSpec(budget)], FillParams(**params))


@pytest.mark.parametrize("seed", range(4))
def test_lossless_with_mask_drafts_equals_ar_exact(engine, seed):
    rng = random.Random(seed)
    a = with_random_drafter(engine, k=rng.randint(1, 6), seed=seed)
    try:
        for trial in range(3):
            prefix, suffix = repetitive_prompt(rng) if trial % 2 else (PREFIX[: rng.randint(5, len(PREFIX))], SUFFIX)
            budget = rng.randint(1, 40)
            ar = fill(engine, prefix, suffix, budget, strategy="ar")
            ll = fill(engine, prefix, suffix, budget, strategy="lossless")
            assert ll.token_ids == ar.token_ids and ll.texts == ar.texts
            ctx = fill(engine, prefix, suffix, budget, strategy="lossless", drafts="context")
            assert ctx.token_ids == ar.token_ids
    finally:
        a.detach()
        engine.drafter = None


def test_forwards_carry_mask_rows_after_the_drafts(engine):
    a = with_random_drafter(engine, k=3, seed=0)
    seen = []
    orig = engine.model.forward_packed

    def spy(ids, pos, segments, out_rows=None):
        seen.append((ids.tolist(), pos.tolist(), segments[0].mask.clone(), segments[0].cache.n))
        return orig(ids, pos, segments, out_rows)

    prefix = PREFIX + "self.x = x\n" + PREFIX  # context n-grams: forwards with drafts and two blocks
    engine.model.forward_packed = spy
    try:
        fill(engine, prefix, SUFFIX, 24, strategy="lossless")
    finally:
        engine.model.forward_packed = orig
        a.detach()
        engine.drafter = None
    mask = engine.tokenizer.special.mask
    steps = [s for s in seen if mask in s[0]]
    assert steps, "no forward carried mask rows"
    two_blocks = 0
    for ids, pos, attend, n in steps:  # masks come last: the rule that keeps clean rows exact
        first = ids.index(mask)
        assert all(t == mask for t in ids[first:]) and len(ids) - first <= 6
        clean = attend[:first, n + first:]
        assert not clean.any(), "a clean row attends to a mask row"
        if len(ids) - first > 3:  # beside block (3 rows at the drafts' positions), then after block
            two_blocks += 1
            m = pos[first] - pos[0]  # pending rows before the drafts
            assert pos[first:first + 3] == pos[m:m + 3]
            assert not attend[first:first + 3, n + m:n + first].any(), "the beside block sees the drafts"
            assert attend[first + 3:, n + m:n + first].all(), "the after block must see the drafts"
    assert two_blocks, "no forward carried both blocks"


@pytest.mark.parametrize("strategy", ["lossless", "threshold"])
def test_an_oracle_drafter_is_accepted_whole(engine, strategy):
    """Mask rows replaced by the AR continuation: every draft lands, forwards drop ~(k+1)x;
    threshold commits the (certain) block at once, so it needs fewer forwards still."""
    k, budget = 4, 30
    ar = fill(engine, PREFIX, SUFFIX, budget, strategy="ar").token_ids[0]
    a = with_random_drafter(engine, k=k, seed=1)
    mask = engine.tokenizer.special.mask
    orig = engine.model.forward_packed
    n_ctx = []

    def oracle(ids, pos, segments, out_rows=None):
        logits = orig(ids, pos, segments, out_rows)
        rows = out_rows.tolist()
        for r, row in enumerate(rows):
            if int(ids[row]) == mask:
                # The row at absolute position p predicts the token at p + 1 of the hole.
                at = int(pos[row]) + 1 - n_ctx[0]
                if 0 <= at < len(ar):
                    logits[r] = -1e4
                    logits[r, ar[at]] = 1e4
        return logits

    prefix_ids = engine.tokenizer.encode(PREFIX)
    suffix_ids = engine.tokenizer.encode(SUFFIX)
    n_ctx.append(len(prefix_ids) + len(suffix_ids) + 3)  # <|fim_prefix|> ... <|fim_suffix|> ... <|fim_middle|>
    engine.model.forward_packed = oracle
    try:
        ll = fill(engine, PREFIX, SUFFIX, budget, strategy=strategy, threshold=0.5)
    finally:
        engine.model.forward_packed = orig
        a.detach()
        engine.drafter = None
    assert ll.token_ids[0] == ar
    if strategy == "lossless":  # first forward: 1 token + k mask drafts; then k drafts + 1 bonus each
        assert ll.stats.forward_passes <= 1 + -(-(len(ar) - 1) // (k + 1)) + 1
    else:  # each forward commits its AR token and the whole certain block (context n-gram
        # drafts, wrong on a random model, cost at most one forward each)
        assert ll.stats.forward_passes <= 2 * -(-len(ar) // (k + 1)) + 1
