"""Tiny random checkpoints in the published layouts (Dream family, LLaDA), written in plain torch.

Each folder has what the real downloads have: config.json with the family's field names,
safetensors with the family's tensor names (sharded with an index when asked), tokenizer.json
and tokenizer_config.json with the family's special tokens placed after the BPE vocabulary.
No transformers here: the parity tests load these same files into transformers themselves.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from diffusion_core.loading.checkpoints import QWEN2_SPLIT
from evaluation.tiny_model import PYTHON_SAMPLE as SAMPLE  # one sample text for every tiny tokenizer

DREAM_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|beginoftext|>", "<|mask|>"]
LLADA_SPECIALS = ["<|startoftext|>", "<|endoftext|>", "<|eot_id|>", "<|mdm_mask|>"]

# Small enough that a forward is milliseconds, large enough for GQA (4 query heads on 2 kv heads).
TINY = dict(hidden=64, layers=2, heads=4, kv_heads=2, mlp=96)


def write_tokenizer(folder: Path, specials: list[str], bpe_size: int = 300) -> dict[str, int]:
    """Qwen2-style byte-level BPE plus `specials` appended after it; returns token -> id."""
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=bpe_size, min_frequency=1, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([SAMPLE] * 4, trainer=trainer)
    tok.model.save(str(folder))  # vocab.json + merges.txt, the slow-tokenizer files
    base = tok.get_vocab_size()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    tok.save(str(folder / "tokenizer.json"))
    ids = {s: base + i for i, s in enumerate(specials)}
    assert all(tok.token_to_id(s) == i for s, i in ids.items())
    return ids


def _tokenizer_config(ids: dict[str, int], **roles: str) -> dict:
    added = {str(i): {"content": s, "lstrip": False, "normalized": False, "rstrip": False,
                      "single_word": False, "special": True} for s, i in ids.items()}
    return {"added_tokens_decoder": added, **{f"{k}_token": v for k, v in roles.items()}}


def _randn(gen: torch.Generator, *shape: int, std: float = 0.2) -> torch.Tensor:
    return torch.randn(*shape, generator=gen) * std


def _norm_weight(gen: torch.Generator, dim: int) -> torch.Tensor:
    # Not all ones, so a norm applied to the wrong tensor shows in the logits.
    return 1.0 + 0.1 * torch.randn(dim, generator=gen)


def save_tensors(folder: Path, tensors: dict[str, torch.Tensor], shards: int = 1) -> None:
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    if shards == 1:
        save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
        return
    keys = sorted(tensors)
    weight_map = {}
    for s in range(shards):
        name = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: tensors[k] for k in keys[s::shards]}
        save_file(part, str(folder / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in part})
    index = {"metadata": {"total_size": sum(v.numel() * v.element_size() for v in tensors.values())},
             "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def make_dream(folder: str | Path, seed: int = 0, variant: str = "dream", shards: int = 2,
               tie: bool = False, tokenizer_json: bool = True, dtype: torch.dtype = torch.float32) -> Path:
    """A tiny checkpoint in the Dream layout.

    variant: "dream" (Dream / Dream-Coder), "dreamon" (adds <|expand|>), "diffucoder"
    (adds <|dlm_pad|> as the tokenizer's pad), "open-dcoder" (model_type qwen2, tied
    embeddings, a [MASK] token named only in tokenizer_config.json).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    specials = list(DREAM_SPECIALS)
    if variant == "dreamon":
        specials.append("<|expand|>")
    if variant == "diffucoder":
        specials.append("<|dlm_pad|>")
    if variant == "open-dcoder":
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "[MASK]"]
        tie = True
    ids = write_tokenizer(folder, specials)
    vocab = max(ids.values()) + 1 + 7  # padded past the tokenizer, as the real 152064 > 151667
    h, L, H, Hkv, F = TINY["hidden"], TINY["layers"], TINY["heads"], TINY["kv_heads"], TINY["mlp"]
    D = h // H
    config = {
        "architectures": ["DreamModel"], "model_type": "Dream", "hidden_act": "silu",
        "hidden_size": h, "intermediate_size": F, "num_hidden_layers": L, "num_attention_heads": H,
        "num_key_value_heads": Hkv, "max_position_embeddings": 512, "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0, "rope_scaling": None, "tie_word_embeddings": tie, "vocab_size": vocab,
        "torch_dtype": "bfloat16", "use_cache": False, "use_sliding_window": False, "sliding_window": None,
        "attention_dropout": 0.0, "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|endoftext|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }
    tok_cfg = dict(bos="<|beginoftext|>", eos="<|endoftext|>", pad="<|endoftext|>", mask="<|mask|>")
    if variant == "open-dcoder":
        config.update(architectures=["Qwen2ForCausalLM"], model_type="qwen2")
        tok_cfg = dict(eos="<|endoftext|>", pad="<|endoftext|>", mask="[MASK]")
    else:
        config["mask_token_id"] = ids["<|mask|>"]
    if variant == "diffucoder":
        tok_cfg["pad"] = "<|dlm_pad|>"
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    (folder / "tokenizer_config.json").write_text(json.dumps(_tokenizer_config(ids, **tok_cfg), indent=2))
    if not tokenizer_json:
        (folder / "tokenizer.json").unlink()

    gen = torch.Generator().manual_seed(seed)
    t = {"model.embed_tokens.weight": _randn(gen, vocab, h, std=1.0), "model.norm.weight": _norm_weight(gen, h)}
    for i in range(L):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = _norm_weight(gen, h)
        t[p + "post_attention_layernorm.weight"] = _norm_weight(gen, h)
        for name, out in (("q_proj", H * D), ("k_proj", Hkv * D), ("v_proj", Hkv * D)):
            t[p + f"self_attn.{name}.weight"] = _randn(gen, out, h)
            t[p + f"self_attn.{name}.bias"] = _randn(gen, out)
        t[p + "self_attn.o_proj.weight"] = _randn(gen, h, H * D)
        t[p + "mlp.gate_proj.weight"] = _randn(gen, F, h)
        t[p + "mlp.up_proj.weight"] = _randn(gen, F, h)
        t[p + "mlp.down_proj.weight"] = _randn(gen, h, F)
    if not tie:
        t["lm_head.weight"] = _randn(gen, vocab, h)
    save_tensors(folder, {k: v.to(dtype) for k, v in t.items()}, shards)
    return folder


def make_llada(folder: str | Path, seed: int = 0, shards: int = 1, n_kv_heads: int | None = None) -> Path:
    """A tiny checkpoint in LLaDA's OLMo layout (config field and tensor names of LLaDA-8B)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ids = write_tokenizer(folder, LLADA_SPECIALS)
    vocab = max(ids.values()) + 1
    h, L, H, F = TINY["hidden"], TINY["layers"], TINY["heads"], TINY["mlp"]
    Hkv = n_kv_heads or H
    D = h // H
    config = {
        "activation_type": "silu", "alibi": False, "alibi_bias_max": 8.0, "architectures": ["LLaDAModelLM"],
        "attention_dropout": 0.0, "attention_layer_norm": False, "attention_layer_norm_with_affine": True,
        "bias_for_layer_norm": False, "block_group_size": 1, "block_type": "llama", "d_model": h,
        "embedding_dropout": 0.0, "embedding_size": vocab, "eos_token_id": ids["<|endoftext|>"],
        "flash_attention": False, "include_bias": False, "include_qkv_bias": False, "init_device": "meta",
        "input_emb_norm": False, "layer_norm_type": "rms", "layer_norm_with_affine": True,
        "mask_token_id": ids["<|mdm_mask|>"], "max_sequence_length": 512, "mlp_hidden_size": F, "mlp_ratio": 4,
        "model_type": "llada", "multi_query_attention": None, "n_heads": H, "n_kv_heads": Hkv, "n_layers": L,
        "pad_token_id": ids["<|endoftext|>"], "precision": "amp_bf16", "residual_dropout": 0.0,
        "rms_norm_eps": 1e-05, "rope": True, "rope_full_precision": True, "rope_theta": 500000.0,
        "scale_logits": False, "use_cache": False, "vocab_size": vocab, "weight_tying": False,
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    tok_cfg = _tokenizer_config(ids, bos="<|startoftext|>", eos="<|endoftext|>", pad="<|endoftext|>")
    (folder / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2))
    gen = torch.Generator().manual_seed(seed)
    t = {"model.transformer.wte.weight": _randn(gen, vocab, h, std=1.0),
         "model.transformer.ln_f.weight": _norm_weight(gen, h),
         "model.transformer.ff_out.weight": _randn(gen, vocab, h)}
    for i in range(L):
        p = f"model.transformer.blocks.{i}."
        t[p + "attn_norm.weight"] = _norm_weight(gen, h)
        t[p + "ff_norm.weight"] = _norm_weight(gen, h)
        t[p + "q_proj.weight"] = _randn(gen, H * D, h)
        t[p + "k_proj.weight"] = _randn(gen, Hkv * D, h)
        t[p + "v_proj.weight"] = _randn(gen, Hkv * D, h)
        t[p + "attn_out.weight"] = _randn(gen, h, H * D)
        t[p + "ff_proj.weight"] = _randn(gen, F, h)
        t[p + "up_proj.weight"] = _randn(gen, F, h)
        t[p + "ff_out.weight"] = _randn(gen, h, F)
    save_tensors(folder, t, shards)
    return folder


def raw_tensors(folder: Path) -> dict[str, torch.Tensor]:
    from diffusion_core.loading.loader import read_tensors, weight_files

    return {k: v.float() for k, v in read_tensors(weight_files(Path(folder))).items()}
