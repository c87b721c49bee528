"""The static-shape step (bucketed region, whole-capacity cache, masks from tensors) against
the uncached full forward and the packed step; compiled CUDA graphs against eager on a GPU."""
import pytest
import torch

from diffusion_core.generation.engine import Engine, HoleSpec
from diffusion_core.tokens.layout import full_mask
from diffusion_core.network.model import capacity_bucket
from diffusion_core.generation.params import FillParams
from diffusion_core.generation.static_step import StaticSteps, region_bucket

PREFIX = "import os\n\ndef main(argv):\n    path = os.path.join(argv[0], 'x')\n    "
SUFFIX = "\n    return 0\n\n\nclass Point:\n    def __init__(self, x, y):\n        self.x = x\n"


def test_buckets_are_powers_of_two_with_floors():
    assert [region_bucket(n) for n in (1, 16, 17, 33, 64)] == [16, 16, 32, 64, 64]
    assert [capacity_bucket(n) for n in (1, 256, 257, 1000, 4097)] == [256, 256, 512, 1024, 8192]


@pytest.mark.parametrize("context_lines,budget", [(1, 5), (3, 16), (40, 17), (90, 40)])
def test_region_logits_match_the_uncached_forward(engine, context_lines, budget):
    """Across region buckets (5 -> 16 rows, 17 -> 32, 40 -> 64) and cache capacities."""
    job = engine.begin([PREFIX * context_lines, SUFFIX], [HoleSpec(budget)])
    lay = job.layout
    T = len(lay.ids)
    ids = torch.tensor(lay.ids)
    ids[lay.holes[0][0] + 1] = 17  # a partly denoised hole
    region = ids[lay.n_context:]
    rows = torch.arange(len(region))
    with torch.inference_mode():
        full = engine.model(ids[None], torch.arange(T)[None], full_mask("diffill", lay.n_context, T)[None, None])[0]
    got = StaticSteps(engine.model, compile=False).logits(job.cache, region, lay.n_context, rows)
    assert job.cache.capacity > job.cache.n  # the slots past the context are read too, under the mask
    assert torch.allclose(got, full[lay.n_context:], atol=1e-4)


@pytest.mark.parametrize("params", [FillParams(), FillParams(strategy="topk", steps=4, block_size=8),
                                    FillParams(temperature=0.8, top_p=0.9, seed=3, threshold=0.5)])
def test_engine_with_static_steps_fills_exactly_like_packed_steps(tiny_dir, params):
    packed, static = Engine.load(tiny_dir, "cpu"), Engine.load(tiny_dir, "cpu", static_steps=True)
    assert static.static is not None and packed.static is None
    segments = [PREFIX, "\n    x = 1\n", SUFFIX]
    holes = [HoleSpec(12), HoleSpec(20)]
    a = packed.fill(segments, holes, params)
    b = static.fill(segments, holes, params)
    assert a.token_ids == b.token_ids and a.stats.forward_passes == b.stats.forward_passes


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graph_steps_match_eager_steps(tiny_dir):
    eager = Engine.load(tiny_dir, "cuda", static_steps=False)
    graphed = Engine.load(tiny_dir, "cuda")  # static steps compiled by default on CUDA
    assert graphed.static is not None and graphed.static._compiled is not None
    for budget in (8, 24):
        a = eager.fill([PREFIX, SUFFIX], [HoleSpec(budget)], FillParams(strategy="topk", steps=4))
        b = graphed.fill([PREFIX, SUFFIX], [HoleSpec(budget)], FillParams(strategy="topk", steps=4))
        assert a.token_ids == b.token_ids
