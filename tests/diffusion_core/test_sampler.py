"""Sampler rules: a fake predictor with a known answer, and the fast engine path against the reference loop."""
import pytest
import torch

from diffusion_core.generation.engine import Engine, HoleSpec
from diffusion_core.errors import FillCancelled
from diffusion_core.tokens.layout import full_mask
from diffusion_core.generation.params import FillParams
from diffusion_core.generation.sampler import choose, trim
from tests.checkpoints.reference_sampler import denoise_reference

from .fakes import FakePredictor

SEGMENTS = ["def add(a, b):\n    return ", "\n\nx = 1\ny = ", "\n"]


def fake_engine(engine: Engine, answers: list[list[int]], confs: list[list[float]], budgets: list[int]):
    """Swap the engine's model for a fake that knows `answers` (token ids per hole)."""
    job = engine.begin(SEGMENTS[: len(budgets) + 1], [HoleSpec(b) for b in budgets])
    answer, conf = {}, {}
    for (s, e), ans, cs in zip(job.layout.holes, answers, confs):
        for i, p in enumerate(range(s, e)):
            answer[p] = ans[i]
            conf[p] = cs[i]
    fake = FakePredictor(engine.config, answer, conf)
    engine.model = fake
    return fake


def reference_with(engine, fake_or_model, segments, budgets, params):
    job = engine.begin(segments, [HoleSpec(b) for b in budgets], params)
    T = len(job.layout.ids)
    mask = full_mask(job.layout.kind, job.layout.n_context, T)

    def full_logits(x):
        with torch.inference_mode():
            m = None if mask is None else mask[None, None]
            return fake_or_model(x[None], torch.arange(T)[None], m)[0].float()

    sp = engine.tokenizer.special
    x, passes = denoise_reference(full_logits, torch.tensor(job.layout.ids), job.layout.holes, params, sp.mask,
                                  engine.end_ids, engine.config.logits_shift, banned=engine.banned)
    return [trim(x[s:e].tolist(), engine.end_ids) for s, e in job.layout.holes], passes


@pytest.mark.parametrize("params", [
    FillParams(strategy="threshold", threshold=0.9, block_size=4),
    FillParams(strategy="threshold", threshold=0.5, block_size=32),
    FillParams(strategy="topk", steps=3, block_size=8),
    FillParams(strategy="topk", steps=0, block_size=2),
    FillParams(strategy="threshold", confidence="margin", threshold=0.6),
    FillParams(strategy="threshold", confidence="entropy", threshold=0.6),
])
def test_fake_predictor_recovers_known_answer(engine, params):
    eos = engine.tokenizer.special.eos
    answers = [[10, 11, 12, 13, 14, 15, eos, eos], [20, 21, 22, eos, eos, eos]]
    confs = [[0.99, 0.95, 0.7, 0.97, 0.6, 0.99, 0.99, 0.99], [0.8, 0.99, 0.92, 0.99, 0.5, 0.5]]
    fake_engine(engine, answers, confs, [8, 6])
    res = engine.fill(SEGMENTS, [HoleSpec(8), HoleSpec(6)], params)
    assert res.token_ids == [[10, 11, 12, 13, 14, 15], [20, 21, 22]]
    ref, _ = reference_with(engine, engine.model, SEGMENTS, [8, 6], params)
    assert ref == res.token_ids


def test_threshold_commits_several_tokens_per_forward(engine):
    eos = engine.tokenizer.special.eos
    ans = [list(range(30, 38)) + [eos] * 4]
    fake = fake_engine(engine, ans, [[0.99] * 12], [12])
    res = engine.fill(SEGMENTS[:2], [HoleSpec(12)], FillParams(threshold=0.9, block_size=32))
    assert res.token_ids == [list(range(30, 38))]
    assert res.stats.forward_passes == 1 and fake.calls == 1
    assert res.stats.tokens_per_forward >= 8


def test_topk_schedule_uses_the_requested_steps(engine):
    fake_engine(engine, [list(range(40, 48))], [[0.9] * 8], [8])
    res = engine.fill(SEGMENTS[:2], [HoleSpec(8)], FillParams(strategy="topk", steps=4, block_size=8))
    assert res.stats.forward_passes == 4
    res = engine.fill(SEGMENTS[:2], [HoleSpec(8)], FillParams(strategy="topk", steps=0, block_size=8))
    assert res.stats.forward_passes == 8


def test_end_token_ends_the_hole_early(engine):
    eos = engine.tokenizer.special.eos
    # The end token is the most confident prediction: the hole closes after one token.
    fake_engine(engine, [[50, eos, 51, 52, 53, 54]], [[0.95, 0.999, 0.5, 0.5, 0.5, 0.5]], [6])
    res = engine.fill(SEGMENTS[:2], [HoleSpec(6)], FillParams(threshold=0.99, block_size=6))
    assert res.token_ids == [[]] or res.token_ids == [[50]]
    assert res.stats.forward_passes <= 2


def test_choose_commits_at_least_one():
    conf = torch.tensor([0.1, 0.3, 0.2])
    assert choose(conf, 1, FillParams(threshold=0.9)).tolist() == [1]
    assert sorted(choose(conf, 1, FillParams(threshold=0.15)).tolist()) == [1, 2]
    assert choose(conf, 2, FillParams(strategy="topk")).tolist() == [1, 2]


@pytest.mark.parametrize("params", [
    FillParams(),
    FillParams(threshold=0.0, block_size=4),
    FillParams(strategy="topk", steps=5, block_size=4, confidence="margin"),
    FillParams(strategy="topk", steps=0, block_size=3, confidence="entropy"),
    FillParams(temperature=0.8, top_p=0.9, seed=7, block_size=5),
])
def test_fast_loop_matches_reference_on_a_random_model(engine, params):
    budgets = [7, 5]
    res = engine.fill(SEGMENTS, [HoleSpec(b) for b in budgets], params)
    ref, passes = reference_with(engine, engine.model, SEGMENTS, budgets, params)
    assert res.token_ids == ref
    assert res.stats.forward_passes == passes


def test_uncached_mode_matches_exact_cache(engine):
    p = FillParams(block_size=4, threshold=0.3)
    a = engine.fill(SEGMENTS, [HoleSpec(6), HoleSpec(6)], p)
    b = engine.fill(SEGMENTS, [HoleSpec(6), HoleSpec(6)], FillParams(block_size=4, threshold=0.3, cache="none"))
    assert a.token_ids == b.token_ids


def test_every_mask_resolved_and_context_untouched(engine):
    job = engine.begin(SEGMENTS, [HoleSpec(9), HoleSpec(4)], FillParams(block_size=3))
    before = job.x.clone()
    while not job.done:
        engine.step([job])
    mask = engine.tokenizer.special.mask
    assert not (job.x == mask).any()
    in_hole = torch.zeros(len(job.x), dtype=torch.bool)
    for s, e in job.layout.holes:
        in_hole[s:e] = True
    assert torch.equal(job.x[~in_hole], before[~in_hole])


def test_cancellation_stops_within_one_step(engine):
    steps = []
    flag = {"stop": False}

    def on_step(info):
        steps.append(info.step)
        flag["stop"] = True  # ask to stop after the first step

    with pytest.raises(FillCancelled):
        engine.fill(SEGMENTS[:2], [HoleSpec(32)], FillParams(strategy="topk", steps=0, block_size=8),
                    cancel=lambda: flag["stop"], on_step=on_step)
    assert steps == [1]


def test_batched_step_equals_separate_fills(engine):
    reqs = [(SEGMENTS, [HoleSpec(5), HoleSpec(3)]), (["import os\n", ""], [HoleSpec(6)]),
            (["class A:\n    def f(self):\n        ", "\n"], [HoleSpec(4)])]
    alone = [engine.fill(s, h, FillParams(block_size=4)).token_ids for s, h in reqs]
    jobs = [engine.begin(s, h, FillParams(block_size=4)) for s, h in reqs]
    while not all(j.done for j in jobs):
        engine.step(jobs)
    assert [j.result().token_ids for j in jobs] == alone
