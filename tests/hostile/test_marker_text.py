"""A document that contains FIM marker text must not rewrite the frame its fill is decoded in."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "checkpoints"))
pytest.importorskip("transformers")

from test_causal import QWEN_SPECIALS, make_causal_lm  # noqa: E402

from diffusion_core.generation.engine import Engine, HoleSpec  # noqa: E402
from diffusion_core.generation.params import FillParams  # noqa: E402


def test_marker_strings_in_code_stay_text(tmp_path):
    eng = Engine.load(make_causal_lm(tmp_path / "m", seed=1), "cpu", dtype=torch.float32)
    tok = eng.tokenizer
    specials = {tok.token_to_id(t) for t in QWEN_SPECIALS}
    text = 'x = "' + "".join(QWEN_SPECIALS) + '"\n'
    ids = tok.encode(text)
    assert not specials & set(ids)
    assert tok.decode(ids) == text
    seen = []
    orig = eng.model.forward_packed

    def spy(ids, pos, segments, out_rows=None):
        seen.append(ids.tolist())
        return orig(ids, pos, segments, out_rows)

    eng.model.forward_packed = spy
    try:
        eng.fill([text + "y = ", "\n" + text], [HoleSpec(3)], FillParams(strategy="ar"))
    finally:
        eng.model.forward_packed = orig
    frame = [t for step in seen for t in step]
    sp = tok.special
    # One frame: each marker exactly once, however many times the document spells it.
    assert [frame.count(i) for i in (sp.pre, sp.suf)] == [1, 1]
