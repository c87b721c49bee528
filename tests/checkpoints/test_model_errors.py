"""A broken model says what is broken in one line naming the file and key (issue 22 item 9):
a GGUF number key holding a string (was `could not convert string to float: 'fast'`), a
config.json or index nested deeper than the JSON decoder's stack (was `RecursionError`), a
`weight_map` that is a list (was `'list' object has no attribute 'values'`)."""
from __future__ import annotations

import shutil

import gguf
import pytest
import torch

from gguf_fixtures import make_gguf
from diffusion_core.errors import CoreError
from diffusion_core.loading.loader import load_model
from evaluation.tiny_model import make_tiny_model


@pytest.fixture(autouse=True)
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def one_line_error(path, *parts: str) -> str:
    with pytest.raises(CoreError) as info:
        load_model(path, "cpu", torch.float32)
    message = str(info.value)
    assert "\n" not in message and all(p in message for p in parts), message
    return message


@pytest.mark.parametrize("writer_method, key", [
    ("add_rope_freq_base", "qwen2.rope.freq_base"),
    ("add_layer_norm_rms_eps", "qwen2.attention.layer_norm_rms_epsilon"),
])
def test_a_gguf_number_key_holding_a_string(tmp_path, monkeypatch, writer_method, key):
    monkeypatch.setattr(gguf.GGUFWriter, writer_method, lambda self, value: self.add_string(key, "fast"))
    tiny = make_gguf(tmp_path / "tiny.gguf")
    one_line_error(tiny.path, str(tiny.path), f"GGUF key {key!r} is 'fast', expected one number")


@pytest.fixture
def folder(tmp_path):
    return make_tiny_model(tmp_path / "model", seed=1)


def test_config_json_nested_too_deeply(folder):
    (folder / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    one_line_error(folder, str(folder / "config.json"), "nested too deeply")


@pytest.mark.parametrize("index, why", [
    ('{"weight_map": ["model.safetensors"]}', "'weight_map' is a list"),
    ('{"weight_map": {"a": 1}}', "'weight_map' is a dict, not an object of tensor name -> shard file name"),
    ("[" * 100_000 + "]" * 100_000, "not a valid safetensors index"),
])
def test_a_broken_safetensors_index(folder, tmp_path, index, why):
    sharded = tmp_path / "sharded"
    shutil.copytree(folder, sharded)
    (sharded / "model.safetensors").rename(sharded / "shard-1.safetensors")
    (sharded / "model.safetensors.index.json").write_text(index)
    one_line_error(sharded, str(sharded / "model.safetensors.index.json"), why)
