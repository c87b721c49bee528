"""DreamOn variable-length infill through the engine: holes start short, grow by
<|expand|> and shrink by deleted end tokens, never past their budgets; the engine's
steps (uncached and approximate DualCache) against the slow reference loop."""
from __future__ import annotations

import pytest
import torch

from ckpt_fixtures import make_dream
from diffusion_core.tokens import infill_formats as fmts
from diffusion_core.generation.engine import Engine, HoleSpec
from diffusion_core.generation.params import FillParams
from reference_sampler import denoise_reference

SEGMENTS = ["def add(a, b):\n    return ", "\n\nclass Point:\n", "\n"]
BUDGETS = [9, 6]


def dreamon_engine(tmp_path, seed: int) -> Engine:
    """A tiny DreamOn checkpoint whose head favours <|expand|> and the end token on about
    half of the hidden states each, so both rules fire within a few steps."""
    engine = Engine.load(make_dream(tmp_path / "dreamon", seed=seed, variant="dreamon"), device="cpu")
    sp = engine.tokenizer.special
    head = engine.model.lm_head.weight
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        head[sp.expand] = torch.randn(head.shape[1], generator=g) * head.norm(dim=1).mean() * 3
        head[sp.eos] = torch.randn(head.shape[1], generator=g) * head.norm(dim=1).mean() * 3
    return engine


def run_job(engine: Engine, params: FillParams):
    job = engine.begin(SEGMENTS, [HoleSpec(b) for b in BUDGETS], params)
    start = job.x.clone()
    grown = shrunk = False
    while not job.done:
        before = [h.end - h.start for h in job.holes]
        engine.step([job])
        after = [h.end - h.start for h in job.holes]
        grown |= any(a > b for a, b in zip(after, before))
        shrunk |= any(a < b for a, b in zip(after, before))
    return job, start, grown, shrunk


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_uncached_engine_matches_the_reference_loop(tmp_path, seed):
    engine = dreamon_engine(tmp_path, seed)
    assert engine.expanding
    params = FillParams(strategy="threshold", threshold=0.5, block_size=4, cache="none")
    job, start, grown, shrunk = run_job(engine, params)
    assert grown or shrunk  # the variable-length path was exercised
    sp = engine.tokenizer.special

    def full_logits(x):
        with torch.no_grad():
            return engine.model(x[None], torch.arange(len(x))[None], None)[0]

    expected, passes = denoise_reference(full_logits, start, job.layout.holes, params, sp.mask, engine.end_ids,
                                         engine.config.logits_shift, banned=engine.banned, expand_id=sp.expand,
                                         budgets=BUDGETS)
    assert torch.equal(job.x, expected)
    assert passes == job.stats.forward_passes


def test_holes_grow_and_shrink_within_budget_and_every_mask_resolves(tmp_path):
    seen_grow = seen_shrink = False
    for seed, cache in [(0, "none"), (1, "dual"), (2, "dual"), (3, "none")]:
        engine = dreamon_engine(tmp_path / str(seed), seed)
        sp = engine.tokenizer.special
        job, start, grown, shrunk = run_job(engine, FillParams(strategy="topk", steps=0, block_size=4, cache=cache))
        seen_grow |= grown
        seen_shrink |= shrunk
        assert [e - s for s, e in job.layout.holes] == [min(b, fmts.DREAMON_INITIAL_MASKS) for b in BUDGETS]
        for h, b in zip(job.holes, BUDGETS):
            hole = job.x[h.start : h.end].tolist()
            assert len(hole) <= b
            assert sp.mask not in hole and sp.expand not in hole and sp.eos not in hole
        # The text around the holes is untouched.
        first, second = job.holes
        assert job.x[: first.start].tolist() == start[: job.layout.holes[0][0]].tolist()
        assert job.x[second.end :].tolist() == start[job.layout.holes[1][1] :].tolist()
        res = job.result()
        assert len(res.texts) == 2 and [len(t) for t in res.token_ids] == [h.end - h.start for h in job.holes]
    assert seen_grow and seen_shrink
