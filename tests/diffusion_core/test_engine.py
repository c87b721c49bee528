"""Engine requests: bad input is one clear error, truncation keeps the text around the hole."""
import pytest

from diffusion_core.generation.engine import HoleSpec
from diffusion_core.errors import CoreError
from diffusion_core.tokens.layout import PREFIX_CUT_ALIGN, fit_context
from diffusion_core.generation.params import MAX_BUDGET, FillParams


@pytest.mark.parametrize("segments, holes, match", [
    ([], [], "segments"),
    (["a"], [HoleSpec(4)], "expected 2 segments"),
    (["a", None], [HoleSpec(4)], "list of strings"),
    (["a", "b"], [HoleSpec(-1)], "budget"),
    (["a", "b"], [HoleSpec(MAX_BUDGET + 1)], "budget"),
    (["a", "b"], [HoleSpec(True)], "budget"),
])
def test_bad_requests_raise_core_error(engine, segments, holes, match):
    with pytest.raises(CoreError, match=match):
        engine.fill(segments, holes)


def test_zero_budget_and_empty_segments(engine):
    res = engine.fill(["", ""], [HoleSpec(0)])
    assert res.texts == [""] and res.stats.forward_passes == 0
    res = engine.fill(["", ""], [HoleSpec(3)])
    assert len(res.texts) == 1
    assert engine.fill(["only context"], []).texts == []


def test_bad_params_are_core_errors():
    with pytest.raises(CoreError, match="strategy"):
        FillParams(strategy="magic")
    with pytest.raises(CoreError, match="unknown key"):
        FillParams.from_dict({"thresh": 0.5})
    with pytest.raises(CoreError, match="expected float"):
        FillParams.from_dict({"threshold": "high"})
    assert FillParams.from_dict({"threshold": 1, "steps": 4}).threshold == 1.0


def test_long_context_is_truncated_around_the_hole(engine):
    pre = "".join(f"value_{i} = {i}\n" for i in range(3000))
    suf = "".join(f"other_{i} = {i}\n" for i in range(3000))
    res = engine.fill([pre, suf], [HoleSpec(8)])
    assert res.stats.truncated_tokens > 0
    assert res.stats.context_tokens <= engine.config.max_context + 8


def test_fit_context_policy():
    pre, suf = list(range(1000)), list(range(5000, 5400))
    segs, dropped = fit_context([pre, suf], 600)
    assert sum(map(len, segs)) <= 600 and dropped == 1400 - sum(map(len, segs))
    assert segs[0] == pre[-len(segs[0]):] and segs[1] == suf[: len(segs[1])]  # nearest the hole kept
    assert (len(pre) - len(segs[0])) % PREFIX_CUT_ALIGN == 0  # the left cut is aligned
    assert len(segs[1]) >= 100  # the suffix keeps its share
    assert fit_context([pre, suf], 5000) == ([pre, suf], 0)
    segs, _ = fit_context([list(range(10)), list(range(900)), list(range(10))], 100)
    assert sum(map(len, segs)) <= 100
