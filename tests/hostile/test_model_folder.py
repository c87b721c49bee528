"""Model folders from the internet (issue 17 item 9): every config.json value is type- and
range-checked with one line naming the file and key; `diffill core --model` on a bad folder
prints that one line, never a traceback; sampling parameters that would turn logits into
inf/NaN are rejected before any work."""
import json
import shutil

import pytest

from diffusion_core.serving import service
from diffusion_core.network.config import ModelConfig
from diffusion_core.errors import CoreError
from diffusion_core.generation.params import FillParams

BASE = dict(vocab_size=400, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)


@pytest.mark.parametrize("key,value", [
    ("num_attention_heads", 0),
    ("hidden_size", "256"),
    ("rms_norm_eps", -1),
    ("rms_norm_eps", 0),
    ("rope_theta", float("nan")),
    ("vocab_size", 10**12),
    ("num_hidden_layers", 2.5),
    ("max_context", True),
    ("tie_word_embeddings", "yes"),
    ("layout", 3),
    ("special_tokens", ["<|mask|>"]),
])
def test_config_value_is_checked_and_named(key, value):
    with pytest.raises(CoreError) as info:
        ModelConfig.from_dict({**BASE, key: value}, "/models/x/config.json")
    msg = str(info.value)
    assert msg.startswith("/models/x/config.json: ") and key in msg and "\n" not in msg


def test_good_config_still_loads():
    cfg = ModelConfig.from_dict({**BASE, "rope_theta": 1000000, "num_key_value_heads": 2})
    assert cfg.head_dim == 16 and cfg.rope_theta == 1000000


@pytest.mark.parametrize("edit", [
    {"num_attention_heads": 0},
    {"hidden_size": "256"},
    {"rms_norm_eps": -1},
])
def test_core_on_bad_config_prints_one_line(tiny_dir, tmp_path, capsys, edit):
    folder = tmp_path / "model"
    shutil.copytree(tiny_dir, folder)
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, **edit}))
    rc = service.main(["--model", str(folder), "--socket", str(tmp_path / "s" / "core.sock"), "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    assert len(err) == 1 and str(folder / "config.json") in err[0] and next(iter(edit)) in err[0]


@pytest.mark.parametrize("params", [
    {"temperature": float("inf")},
    {"temperature": 1e-320},
    {"top_p": 1e-300},
    {"top_p": float("nan")},
    {"threshold": float("nan")},
    {"seed": 2**70},
])
def test_fill_params_that_break_float32_are_rejected(params):
    with pytest.raises(CoreError) as info:
        FillParams.from_dict(params)
    assert f"params.{next(iter(params))}" in str(info.value)
