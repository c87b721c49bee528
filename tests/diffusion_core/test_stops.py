"""Per-hole stop rules and the loop guards (step cap, non-finite logits), on fake predictors."""
from __future__ import annotations

import pytest
import torch

from diffusion_core.generation.engine import Engine, HoleSpec
from diffusion_core.errors import CoreError
from diffusion_core.network.model import Transformer
from diffusion_core.generation.params import FillParams
from diffusion_core.generation.sampler import bracket_stop, step_cap, stop_point

from .fakes import FakePredictor

ONE_BY_ONE = FillParams(strategy="topk", steps=0, block_size=32)


def test_stop_point_lines_and_dedent():
    assert stop_point("x = 1", max_lines=1) is None
    assert stop_point("x = 1\ny", max_lines=1) == 5
    assert stop_point("\n  \nx = 1\n", max_lines=1) == 9  # blank lines have no content
    assert stop_point("a\nb\nc", max_lines=2) == 3
    text = "foo()\n        bar()\n    baz()\n"
    assert stop_point(text, dedent_below=8) == len("foo()\n        bar()")
    assert stop_point("    x\n", dedent_below=8) is None  # the first line's indent says nothing
    assert stop_point("x\n    ", dedent_below=8) is None  # no content yet: not decided
    assert stop_point("anything\nat all\n") is None  # no rule


def _answer_engine(engine: Engine, text: str, budget: int, conf_step: float = 0.0) -> tuple[list[int], FakePredictor]:
    ids = engine.tokenizer.encode(text)
    ids = (ids + [engine.tokenizer.special.eos] * budget)[:budget]
    job = engine.begin(["def f():\n    return ", "\n"], [HoleSpec(budget)])
    (s, e), = job.layout.holes
    answer = {p: ids[p - s] for p in range(s, e)}
    conf = {p: 0.99 - conf_step * (p - s) for p in range(s, e)}  # left to right, most sure first
    fake = FakePredictor(engine.config, answer, conf)
    engine.model = fake
    return ids, fake


def test_line_hole_stops_at_its_newline_on_the_diffill_layout(engine):
    _answer_engine(engine, "x + 1\n    y = 2\n    z = 3\n", 16, conf_step=0.01)
    free = engine.fill(["def f():\n    return ", "\n"], [HoleSpec(16)], ONE_BY_ONE)
    line = engine.fill(["def f():\n    return ", "\n"], [HoleSpec(16, max_lines=1)], ONE_BY_ONE)
    assert free.texts[0].startswith("x + 1\n    y = 2")
    assert line.texts[0] == "x + 1"
    assert line.stats.forward_passes < free.stats.forward_passes


class ScriptFake(Transformer):
    """A causal fake that writes `script` from absolute position `start` on, then ends."""

    def __init__(self, cfg, start: int, script: list[int]):
        super().__init__(cfg)
        self.start, self.script = start, script

    def forward_packed(self, ids, pos, segments, out_rows=None):
        for seg in segments:
            if seg.mode == "append":
                seg.cache.n += seg.end - seg.start
        rows = pos if out_rows is None else pos[out_rows]
        out = torch.full((len(rows), self.config.vocab_size), -30.0)
        for i, p in enumerate(rows.tolist()):
            j = p + 1 - self.start  # Dream's shift: output p predicts token p + 1
            out[i, self.script[j] if 0 <= j < len(self.script) else 0] = 0.0
        return out


def causal_engine(tiny_dir, script: str, segments: list[str]):
    """The tiny model's tokenizer on the causal layout, with a fake that writes `script`."""
    eng = Engine.load(tiny_dir, "cpu")
    eng.config.layout = "causal"  # the tiny tokenizer has <|pre|>/<|suf|>/<|mid|> for the frame
    eng.__init__(eng.loaded)
    ids = eng.tokenizer.encode(script) + [eng.tokenizer.special.eos]
    start = len(eng.begin(segments, [HoleSpec(1)]).ctx)
    eng.model = ScriptFake(eng.config, start, ids)
    return eng, ids


@pytest.mark.parametrize("strategy", ["ar", "lossless", "threshold"])
def test_line_hole_stops_at_its_newline_on_the_causal_layout(tiny_dir, strategy):
    eng, ids = causal_engine(tiny_dir, "foo(1)\n    bar = 2", ["x = ", "\n"])
    params = FillParams(strategy=strategy)
    free = eng.fill(["x = ", "\n"], [HoleSpec(30)], params)
    assert free.texts[0] == "foo(1)\n    bar = 2"  # ends at the script's end token
    line = eng.fill(["x = ", "\n"], [HoleSpec(30, max_lines=1)], params)
    assert line.texts[0] == "foo(1)"
    if strategy == "ar":
        assert line.stats.forward_passes < free.stats.forward_passes


def test_dedent_stops_a_block_hole(tiny_dir):
    eng, _ = causal_engine(tiny_dir, "foo(1)\n    bar = 2\nx", ["def f():\n    ", "\n"])
    res = eng.fill(["def f():\n    ", "\n"], [HoleSpec(30, dedent_below=4)], FillParams(strategy="ar"))
    assert res.texts[0] == "foo(1)\n    bar = 2"


def test_bracket_stop_finds_the_closer_of_the_enclosing_scope():
    assert bracket_stop("return a\n}", 0) == 9
    assert bracket_stop('f(")")\n}', 0) == 7  # a bracket inside quotes does not count
    assert bracket_stop('s = "a\\"}" + x)', 0) == 14  # nor an escaped quote's neighbour
    assert bracket_stop("x)", -1) is None and bracket_stop("x))", -1) == 2  # may close one opened before
    assert bracket_stop("g(a)[0]", 0) is None  # balanced: no stop
    assert bracket_stop("x}", 1) is None  # 1: no rule
    assert stop_point("a\n}", 0, -1, 0) == 2 and stop_point("a\nb\n", 1, -1, 0) == 1


def test_a_brace_block_hole_stops_before_the_enclosing_close(tiny_dir):
    eng, _ = causal_engine(tiny_dir, "foo(1);\n}\nint y;", ["int f() {\n  ", "\n}"])
    free = eng.fill(["int f() {\n  ", "\n}"], [HoleSpec(30)], FillParams(strategy="ar"))
    assert free.texts[0] == "foo(1);\n}\nint y;"
    res = eng.fill(["int f() {\n  ", "\n}"], [HoleSpec(30, min_depth=0)], FillParams(strategy="ar"))
    assert res.texts[0] == "foo(1);\n"
    assert res.stats.forward_passes < free.stats.forward_passes


class NaNFake(FakePredictor):
    def forward_packed(self, ids, pos, segments, out_rows=None):
        return super().forward_packed(ids, pos, segments, out_rows) * float("nan")


@pytest.mark.parametrize("params", [FillParams(), ONE_BY_ONE, FillParams(cache="none")])
def test_nan_logits_end_the_fill_with_one_line(engine, params):
    job = engine.begin(["a = ", "\n"], [HoleSpec(8)])
    (s, e), = job.layout.holes
    engine.model = NaNFake(engine.config, {p: 5 for p in range(s, e)}, {p: 0.5 for p in range(s, e)})
    with pytest.raises(CoreError, match="non-finite logits") as err:
        engine.fill(["a = ", "\n"], [HoleSpec(8)], params)
    assert engine.loaded.path.name in str(err.value)


def test_step_cap_ends_a_loop_that_makes_no_progress(engine):
    """A job whose steps never finish it is stopped at its cap with one error."""
    job = engine.begin(["a = ", "\n"], [HoleSpec(8)], ONE_BY_ONE)
    job.apply = lambda logits: 0  # a broken rule that commits nothing
    with pytest.raises(CoreError, match="not finished after"):
        while not job.done:
            engine.step([job])
        job.result()
    assert job.stats.forward_passes == step_cap([8])


@pytest.mark.parametrize("params", [FillParams(), FillParams(steps=0), ONE_BY_ONE])
def test_nan_in_a_norm_weight_of_a_real_model_folder_is_one_error(tiny_dir, tmp_path, params):
    """Issue 17 item 1: one NaN in norm.weight made fills run forever (argmax picked the mask)."""
    import shutil

    from safetensors.torch import load_file, save_file

    dst = tmp_path / "nan"
    shutil.copytree(tiny_dir, dst)
    t = load_file(str(dst / "model.safetensors"))
    t["norm.weight"][0] = float("nan")
    save_file(t, str(dst / "model.safetensors"), metadata={"format": "pt"})
    eng = Engine.load(dst, "cpu")
    with pytest.raises(CoreError, match="nan.*non-finite logits"):
        eng.fill(["def f(x):\n    return ", "\n"], [HoleSpec(12), ], params)
