"""The context encoded in chunks, one per scheduler step (issue 25 items 1 and 4): the
same fills as the one-shot encode (the reference), a job cancelled mid-encode leaves
what it encoded for the next request, and a background warm-up is joined by the request
that needs its context instead of being redone. Both layouts with an exact cache: the
causal one (a tiny random Qwen2 written by transformers) and our own diffill one."""
from __future__ import annotations

import pytest
import torch

from diffusion_core.generation.engine import Engine, HoleSpec, WarmJob
from diffusion_core.errors import FillCancelled
from diffusion_core.generation.params import FillParams
from evaluation.tiny_model import make_tiny_model

from test_causal import make_causal_lm

pytest.importorskip("transformers")

PREFIX = "".join(f"def f{i}(a, b):\n    return a * {i} + b\n\n" for i in range(12)) + "def g(x):\n    return "
SUFFIX = "\n\nprint(g(3))\n"
HOLES = [HoleSpec(budget=8, max_lines=1)]


@pytest.fixture(scope="module", params=["causal", "diffill"])
def folder(request, tmp_path_factory):
    if request.param == "causal":
        return make_causal_lm(tmp_path_factory.mktemp("qwen2"), seed=3)
    return make_tiny_model(tmp_path_factory.mktemp("tiny"), seed=1)


def fresh(folder) -> Engine:
    eng = Engine.load(folder, "cpu", dtype=torch.float32) if (folder / "config.json").exists() else None
    eng.encode_step_tokens = 16  # many chunks even for this short context
    return eng


def run(eng: Engine, job) -> object:
    while not job.done:
        eng.step([job])
    return job.result()


def test_chunked_encode_fills_as_the_one_shot_encode(folder):
    ref = fresh(folder).fill([PREFIX, SUFFIX], HOLES, FillParams(strategy="ar") if _causal(folder) else None)
    eng = fresh(folder)
    job = eng.begin([PREFIX, SUFFIX], HOLES, FillParams(strategy="ar") if _causal(folder) else None, lazy=True)
    assert job.encoding and job.progress()["phase"] == "encoding"
    chunks = 0
    while job.encoding:
        before = job.progress()["encoded"]
        eng.step([job])
        chunks += 1
        assert job.progress()["encoded"] - before <= 16 or not job.encoding
    assert chunks >= 3  # the context really was cut into steps
    res = run(eng, job)
    assert res.texts == ref.texts
    assert res.stats.context_tokens == ref.stats.context_tokens


def test_a_cancelled_encode_is_reused_by_the_next_request(folder):
    params = FillParams(strategy="ar") if _causal(folder) else None
    ref = fresh(folder).fill([PREFIX, SUFFIX], HOLES, params)
    eng = fresh(folder)
    first = eng.begin([PREFIX, SUFFIX], HOLES, params, lazy=True)
    for _ in range(3):
        eng.step([first])
    encoded = first.progress()["encoded"]
    assert 0 < encoded < first.progress()["context"]
    first.finish(FillCancelled())  # what the scheduler does with a superseded job
    # The user typed one more character at the hole: the context shares the cancelled prefix.
    second = eng.begin([PREFIX, SUFFIX], HOLES, params, lazy=True)
    res = run(eng, second)
    assert res.stats.reused_tokens >= encoded - 1
    assert res.texts == ref.texts  # reuse changes the cost, never the answer


def test_a_request_joins_the_warm_up_of_its_context(folder):
    params = FillParams(strategy="ar") if _causal(folder) else None
    ref = fresh(folder).fill([PREFIX, SUFFIX], HOLES, params)
    eng = fresh(folder)
    warm = eng.warm([PREFIX, SUFFIX], budget=HOLES[0].budget, params=params)
    assert isinstance(warm, WarmJob) and warm.encoding
    eng.step([warm])
    eng.step([warm])
    encoded = warm.progress()["encoded"]
    job = eng.begin([PREFIX, SUFFIX], HOLES, params, lazy=True)
    assert warm.done  # taken over, not copied and not left running beside it
    res = run(eng, job)
    assert res.stats.reused_tokens >= encoded
    assert res.texts == ref.texts
    # A finished warm-up: the whole context is reused.
    eng2 = fresh(folder)
    run(eng2, eng2.warm([PREFIX, SUFFIX], budget=HOLES[0].budget, params=params))
    again = eng2.fill([PREFIX, SUFFIX], HOLES, params)
    assert again.texts == ref.texts
    assert again.stats.reused_tokens >= ref.stats.context_tokens - 2 - (2 if not _causal(folder) else 0)


def _causal(folder) -> bool:
    import json

    return "Qwen2" in json.dumps(json.loads((folder / "config.json").read_text()).get("architectures", []))
