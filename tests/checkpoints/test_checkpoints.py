"""Format detection, special tokens, tokenizer rebuilding and one-line failures of foreign checkpoints."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from ckpt_fixtures import make_dream, make_llada
from diffusion_core.loading.checkpoints import build_qwen2_tokenizer, converter_for
from diffusion_core.generation.engine import Engine, HoleSpec
from diffusion_core.errors import CoreError
from diffusion_core.loading.loader import load_model
from evaluation.tiny_model import make_tiny_model

REPO = Path(__file__).resolve().parents[2]


def one_line_error(folder: Path, *needles: str) -> str:
    with pytest.raises(CoreError) as e:
        load_model(folder, "cpu")
    msg = str(e.value)
    assert "\n" not in msg
    for n in needles:
        assert n in msg, msg
    return msg


def edit_config(folder: Path, **changes) -> None:
    path = folder / "config.json"
    c = json.loads(path.read_text())
    for k, v in changes.items():
        if v is None and k.startswith("-"):
            c.pop(k[1:], None)
        else:
            c[k] = v
    path.write_text(json.dumps(c))


def test_own_format_needs_no_converter(tmp_path):
    folder = make_tiny_model(tmp_path / "own")
    assert converter_for(folder) is None
    assert load_model(folder, "cpu").config.layout == "diffill"


@pytest.mark.parametrize("variant, model_type, roles", [
    ("dream", "dream", {"mask": "<|mask|>", "eos": "<|endoftext|>", "bos": "<|beginoftext|>", "pad": "<|endoftext|>", "expand": None}),
    ("dreamon", "dreamon", {"mask": "<|mask|>", "bos": "<|beginoftext|>", "expand": "<|expand|>"}),
    ("diffucoder", "diffucoder", {"mask": "<|mask|>", "eos": "<|endoftext|>", "pad": "<|dlm_pad|>", "expand": None}),
    ("open-dcoder", "open-dcoder", {"mask": "[MASK]", "eos": "<|endoftext|>", "bos": None}),
])
def test_dream_family_conversion(tmp_path, variant, model_type, roles):
    folder = make_dream(tmp_path / variant, variant=variant)
    lm = load_model(folder, "cpu")
    cfg, sp = lm.config, lm.tokenizer.special
    assert (cfg.model_type, cfg.layout, cfg.logits_shift, cfg.attention_bias) == (model_type, "natural", True, True)
    assert cfg.tie_word_embeddings == (variant == "open-dcoder")
    assert cfg.max_context == 512  # min(trained context 2048, max_position_embeddings)
    for role, name in roles.items():
        expected = None if name is None else lm.tokenizer.token_to_id(name)
        assert getattr(sp, role) == expected, role
    assert lm.model.layers[0].self_attn.q_proj.bias is not None


def test_llada_conversion(tmp_path):
    folder = make_llada(tmp_path / "llada")
    lm = load_model(folder, "cpu")
    cfg, sp, tok = lm.config, lm.tokenizer.special, lm.tokenizer
    assert (cfg.model_type, cfg.layout, cfg.logits_shift, cfg.attention_bias) == ("llada", "natural", False, False)
    assert (sp.mask, sp.eos, sp.bos) == (tok.token_to_id("<|mdm_mask|>"), tok.token_to_id("<|endoftext|>"),
                                         tok.token_to_id("<|startoftext|>"))
    raw = load_file(str(folder / "model.safetensors"))
    assert torch.equal(lm.model.layers[1].mlp.gate_proj.weight, raw["model.transformer.blocks.1.ff_proj.weight"])
    assert torch.equal(lm.model.lm_head.weight, raw["model.transformer.ff_out.weight"])


def test_llada_mask_token_found_by_name_without_config_id(tmp_path):
    folder = make_llada(tmp_path / "llada")
    edit_config(folder, **{"-mask_token_id": None})
    lm = load_model(folder, "cpu")
    assert lm.tokenizer.special.mask == lm.tokenizer.token_to_id("<|mdm_mask|>")


def test_unknown_model_type_names_key_and_value(tmp_path):
    folder = make_dream(tmp_path / "x")
    edit_config(folder, model_type="mamba")
    one_line_error(folder, "config.json", "model_type", "'mamba'")


def test_unknown_tensor_names_the_tensor(tmp_path):
    folder = make_llada(tmp_path / "l")
    path = folder / "model.safetensors"
    t = load_file(str(path))
    t["model.transformer.blocks.0.att_proj.weight"] = t.pop("model.transformer.blocks.0.q_proj.weight")
    save_file(t, str(path))
    one_line_error(folder, "model.transformer.blocks.0.att_proj.weight")


def test_missing_tensor_names_the_tensor(tmp_path):
    folder = make_dream(tmp_path / "d", shards=1)
    path = folder / "model.safetensors"
    t = load_file(str(path))
    del t["model.layers.1.self_attn.k_proj.bias"]
    save_file(t, str(path))
    one_line_error(folder, "layers.1.self_attn.k_proj.bias")


@pytest.mark.parametrize("key, value", [("include_bias", True), ("scale_logits", True), ("block_type", "sequential"),
                                        ("attention_layer_norm", True), ("layer_norm_type", "default")])
def test_llada_features_we_lack_name_the_key(tmp_path, key, value):
    folder = make_llada(tmp_path / "l")
    edit_config(folder, **{key: value})
    one_line_error(folder, key)


@pytest.mark.parametrize("key, value", [("hidden_act", "gelu"), ("use_sliding_window", True),
                                        ("rope_scaling", {"type": "yarn", "factor": 4.0})])
def test_dream_features_we_lack_name_the_key(tmp_path, key, value):
    folder = make_dream(tmp_path / "d")
    edit_config(folder, **{key: value})
    one_line_error(folder, key)


def test_qwen2_without_mask_token_is_a_causal_lm_and_needs_fim_tokens(tmp_path):
    # No mask token: a plain Qwen2ForCausalLM, loaded as a FIM coder; this one has no FIM tokens.
    folder = make_dream(tmp_path / "q", variant="open-dcoder")
    tc = json.loads((folder / "tokenizer_config.json").read_text())
    del tc["mask_token"]
    (folder / "tokenizer_config.json").write_text(json.dumps(tc))
    one_line_error(folder, "<|fim_prefix|>", "FIM")


def test_bad_ids_and_bad_json_are_one_line(tmp_path):
    folder = make_dream(tmp_path / "d")
    edit_config(folder, mask_token_id=10 ** 6)
    one_line_error(folder, "mask_token_id")
    (folder / "config.json").write_text("{not json")
    one_line_error(folder, "config.json", "not valid JSON")


def test_tokenizer_json_built_from_slow_files_encodes_identically(tmp_path):
    reference = make_dream(tmp_path / "ref")
    folder = make_dream(tmp_path / "slow", tokenizer_json=False)
    assert not (folder / "tokenizer.json").exists()
    lm = load_model(folder, "cpu")
    assert (folder / "tokenizer.json").is_file()
    ref = load_model(reference, "cpu").tokenizer
    text = "def  add(a, b):\n\treturn a+b  # é <|mask|> x\r\n\n    y = 12345\n"
    assert lm.tokenizer.encode(text) == ref.encode(text)
    assert lm.tokenizer.special == ref.special


def test_slow_tokenizer_build_matches_transformers_qwen2(tmp_path):
    transformers = pytest.importorskip("transformers")
    folder = make_dream(tmp_path / "slow", tokenizer_json=False)
    ours = build_qwen2_tokenizer(folder)
    theirs = transformers.Qwen2Tokenizer(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"))
    for text in ["def add(a, b):\n    return a + b\n", "x  =  'it''s'  \n\n\n  # ünïcode 42", "   \t\tfor i in range(10):"]:
        assert ours.encode(text, add_special_tokens=False).ids == theirs.encode(text, add_special_tokens=False)


def test_no_tokenizer_at_all_names_the_file(tmp_path):
    folder = make_dream(tmp_path / "d", tokenizer_json=False)
    (folder / "vocab.json").unlink()
    one_line_error(folder, "tokenizer.json")


@pytest.mark.parametrize("family", ["dream", "dreamon", "llada"])
def test_engine_fills_converted_folders(tmp_path, family):
    folder = make_llada(tmp_path / family) if family == "llada" else make_dream(tmp_path / family, variant=family)
    engine = Engine.load(folder, device="cpu")
    assert engine.info()["model_type"] == family
    res = engine.fill(["def add(a, b):\n    return ", "\n"], [HoleSpec(6)])
    assert len(res.texts) == 1 and isinstance(res.texts[0], str)
    assert res.stats.cache == "dual" and res.stats.forward_passes >= 1
    assert all(t not in (engine.tokenizer.special.mask,) for t in res.token_ids[0])


def test_cli_fill_with_a_converted_dream_folder(tmp_path):
    folder = make_dream(tmp_path / "dream")
    src = tmp_path / "a.py"
    src.write_text("def add(a, b):\n    return <|fill|>\n\nprint(add(1, 2))\n")
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "diffill", "fill", str(src), "--model", str(folder),
                           "--device", "cpu"], capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("def add(a, b):\n    return ")
    assert "print(add(1, 2))" in proc.stdout and "<|fill|>" not in proc.stdout
