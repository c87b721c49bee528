"""Model and loader: cached vs uncached logits, safetensors round trips, and bad model folders."""
import json

import pytest
import torch

from diffusion_core.generation.engine import Engine, HoleSpec
from diffusion_core.errors import CoreError
from diffusion_core.tokens.layout import full_mask
from diffusion_core.loading.loader import INDEX_NAME, load_model, save_model
from diffusion_core.network.model import Segment
from evaluation.tiny_model import make_tiny_model


def test_exact_cache_logits_match_uncached(engine):
    job = engine.begin(["def f(x):\n    y = x * 2\n    return ", "\n\nprint(f(3))\n"], [HoleSpec(6)])
    lay = job.layout
    T = len(lay.ids)
    ids = torch.tensor(lay.ids)
    ids[lay.holes[0][0] + 2] = 17  # a partly denoised hole
    with torch.inference_mode():
        full = engine.model(ids[None], torch.arange(T)[None], full_mask("diffill", lay.n_context, T)[None, None])[0]
        seg = Segment(0, T - lay.n_context, job.cache, "scratch", None)
        cached = engine.model.forward_packed(ids[lay.n_context:], torch.arange(lay.n_context, T), [seg])
    assert torch.allclose(cached, full[lay.n_context:], atol=1e-4)


def test_prefix_reuse_encodes_only_new_tokens_and_matches_cold(tiny_dir):
    warm, cold = Engine.load(tiny_dir, "cpu"), Engine.load(tiny_dir, "cpu")
    pre, suf = "import os\n\ndef main(argv):\n    path = os.path.join(argv[0], 'x')\n    ", "\n    return 0\n"
    warm.fill([pre, suf], [HoleSpec(8)])
    res = warm.fill([pre + "if", suf], [HoleSpec(8)])
    assert res.stats.reused_tokens > 0.7 * res.stats.context_tokens
    assert res.token_ids == cold.fill([pre + "if", suf], [HoleSpec(8)]).token_ids


def test_concurrent_jobs_on_one_context_do_not_share_a_cache(engine):
    segs = ["x = 1\ny = ", "\n"]
    a = engine.begin(segs, [HoleSpec(5)])
    b = engine.begin(segs, [HoleSpec(5)])
    assert a.cache is not b.cache
    while not (a.done and b.done):
        engine.step([a, b])
    assert a.result().token_ids == b.result().token_ids


@pytest.mark.parametrize("shard_bytes", [10**9, 20_000])
def test_safetensors_round_trip(tmp_path, tiny_dir, shard_bytes):
    src = load_model(tiny_dir, "cpu")
    files = save_model(src.model, tmp_path, tiny_dir / "tokenizer.json", shard_bytes=shard_bytes)
    assert (len(files) > 1) == (shard_bytes < 10**9)
    assert (tmp_path / INDEX_NAME).exists() == (len(files) > 1)
    back = load_model(tmp_path, "cpu")
    for (k, v), (k2, v2) in zip(src.model.state_dict().items(), back.model.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    assert back.model.lm_head.weight is back.model.embed_tokens.weight


def _copy(tiny_dir, tmp_path):
    for f in tiny_dir.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    return tmp_path


@pytest.mark.parametrize("breakage, message", [
    (lambda d: (d / "config.json").unlink(), "config.json not found"),
    (lambda d: (d / "config.json").write_text("{not json"), "not valid JSON"),
    (lambda d: (d / "model.safetensors").write_bytes(b"\x00" * 64), "cannot read safetensors"),
    (lambda d: (d / "model.safetensors").unlink(), "no model.safetensors"),
    (lambda d: (d / "tokenizer.json").write_text("[]"), "tokenizer.json"),
    (lambda d: _edit_config(d, hidden_size=128), "has shape"),
    (lambda d: _edit_config(d, num_hidden_layers=3), "missing tensor"),
    (lambda d: _edit_config(d, num_hidden_layers=1), "unexpected tensor"),
])
def test_bad_model_folder_fails_with_one_line(tmp_path, tiny_dir, breakage, message):
    folder = _copy(tiny_dir, tmp_path)
    breakage(folder)
    with pytest.raises(CoreError) as err:
        load_model(folder, "cpu")
    text = str(err.value)
    assert message in text and "\n" not in text and str(folder) in text


def _edit_config(folder, **changes):
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(changes)
    (folder / "config.json").write_text(json.dumps(cfg))


def test_unknown_device_and_missing_folder(tiny_dir, tmp_path):
    with pytest.raises(CoreError, match="unknown device"):
        load_model(tiny_dir, "tpu-9000")
    with pytest.raises(CoreError, match="model folder not found"):
        load_model(tmp_path / "nope", "cpu")
