"""Tiny random GGUF files written with the `gguf` package's own writer, as llama.cpp writes them.

Weights are drawn in HF names and layout, quantized per tensor (F32, F16, Q8_0, Q5_0, Q4_0:
the types gguf-py can quantize), and written under llama.cpp's names; for architecture llama
the q/k rows are permuted as convert_hf_to_gguf.py does. `effective` holds what the file
really stores in HF names (each tensor quantized then dequantized), for the references.
The vocabulary is a small byte-level BPE trained on a code sample, plus Qwen2.5-Coder's
special tokens (CONTROL), one added word (USER_DEFINED) and padding entries (UNUSED).
No diffill code is used to write them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import torch
from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

from ckpt_fixtures import SAMPLE, TINY

# Qwen2's split as transformers' Qwen2Tokenizer spells it (not diffill's copy).
QWEN2_REGEX = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
CONTROL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_pad|>", "<|fim_prefix|>", "<|fim_middle|>",
           "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"]
USER_DEFINED = ["<tool_call>"]
N_PAD = 5  # "[PADn]" entries after the added tokens, as the real vocabulary rounds up to 151,936
Q = gguf.GGMLQuantizationType

HF_TO_GGUF_BLOCK = {
    "input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight", "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.weight": "attn_k.weight", "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.weight": "attn_v.weight", "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight", "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight", "mlp.down_proj.weight": "ffn_down.weight",
}
HF_TO_GGUF_TOP = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
                  "lm_head.weight": "output.weight"}

# Per-tensor storage: a mix like the real file's (which has Q5_0, Q8_0, Q4_K, Q6_K and F32).
DEFAULT_TYPES = {"embed_tokens": Q.Q5_0, "lm_head": Q.Q8_0, "q_proj.weight": Q.Q8_0, "k_proj.weight": Q.F16,
                 "v_proj.weight": Q.Q8_0, "o_proj": Q.Q4_0, "gate_proj": Q.Q8_0, "up_proj": Q.F16,
                 "down_proj": Q.Q5_0}


def gguf_name(hf: str) -> str:
    if hf in HF_TO_GGUF_TOP:
        return HF_TO_GGUF_TOP[hf]
    _, _, layer, rest = hf.split(".", 3)
    return f"blk.{layer}.{HF_TO_GGUF_BLOCK[rest]}"


def llama_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.permute (HF rotate-half rows -> ggml's interleaved rows)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def train_bpe() -> tuple[list[str], list[str]]:
    """Tokens (by id) and merges ("a b") of a small Qwen2-style byte-level BPE."""
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    trainer = trainers.BpeTrainer(vocab_size=300, min_frequency=1, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([SAMPLE] * 4, trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    vocab = model["vocab"]
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    return tokens, merges


@dataclass
class TinyGGUF:
    path: Path
    arch: str
    tokens: list[str]
    merges: list[str]
    n_bpe: int  # tokens [0, n_bpe) are the BPE vocabulary
    effective: dict[str, torch.Tensor]  # HF names -> float32, what the file stores (dequantized)
    hparams: dict


def make_gguf(path: str | Path, arch: str = "qwen2", seed: int = 0, tie: bool = False,
              types: dict | None = None, pre: str | None = None, fim_ids: bool = False,
              skip: tuple[str, ...] = ()) -> TinyGGUF:
    """Write a tiny random GGUF; skip: llama.cpp tensor names to leave out (a broken file)."""
    path = Path(path)
    types = DEFAULT_TYPES if types is None else types
    tokens, merges = train_bpe()
    n_bpe = len(tokens)
    tokens = tokens + CONTROL + USER_DEFINED + [f"[PAD{n_bpe + len(CONTROL) + 1 + i}]" for i in range(N_PAD)]
    ttypes = ([gguf.TokenType.NORMAL] * n_bpe + [gguf.TokenType.CONTROL] * len(CONTROL)
              + [gguf.TokenType.USER_DEFINED] * len(USER_DEFINED) + [gguf.TokenType.UNUSED] * N_PAD)
    vocab = len(tokens)
    h, L, H, Hkv, F = TINY["hidden"], TINY["layers"], TINY["heads"], TINY["kv_heads"], TINY["mlp"]
    D = h // H
    hp = dict(vocab=vocab, hidden=h, layers=L, heads=H, kv_heads=Hkv, mlp=F, rope_theta=1000000.0 if arch == "qwen2"
              else 500000.0, eps=1e-6 if arch == "qwen2" else 1e-5, context=512, tie=tie, bias=arch == "qwen2")
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape, std=0.2):
        return torch.randn(*shape, generator=gen) * std

    def norm(dim):
        return 1.0 + 0.1 * torch.randn(dim, generator=gen)

    hf = {"model.embed_tokens.weight": randn(vocab, h, std=1.0), "model.norm.weight": norm(h)}
    for i in range(L):
        p = f"model.layers.{i}."
        hf[p + "input_layernorm.weight"] = norm(h)
        hf[p + "post_attention_layernorm.weight"] = norm(h)
        for name, out in (("q_proj", H * D), ("k_proj", Hkv * D), ("v_proj", Hkv * D)):
            hf[p + f"self_attn.{name}.weight"] = randn(out, h)
            if hp["bias"]:
                hf[p + f"self_attn.{name}.bias"] = randn(out)
        hf[p + "self_attn.o_proj.weight"] = randn(h, H * D)
        hf[p + "mlp.gate_proj.weight"] = randn(F, h)
        hf[p + "mlp.up_proj.weight"] = randn(F, h)
        hf[p + "mlp.down_proj.weight"] = randn(h, F)
    if not tie:
        hf["lm_head.weight"] = randn(vocab, h)

    w = gguf.GGUFWriter(str(path), arch)
    w.add_name(f"tiny random {arch}")
    w.add_block_count(L)
    w.add_context_length(hp["context"])
    w.add_embedding_length(h)
    w.add_feed_forward_length(F)
    w.add_head_count(H)
    w.add_head_count_kv(Hkv)
    w.add_rope_freq_base(hp["rope_theta"])
    w.add_layer_norm_rms_eps(hp["eps"])
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre or ("qwen2" if arch == "qwen2" else "llama-bpe"))
    w.add_token_list(tokens)
    w.add_token_types(ttypes)
    w.add_token_merges(merges)
    w.add_eos_token_id(tokens.index("<|im_end|>"))
    w.add_bos_token_id(tokens.index("<|endoftext|>"))
    if fim_ids:  # a file naming its FIM tokens by id (pointing pad at <|endoftext|> to tell them apart)
        w.add_uint32(gguf.Keys.Tokenizer.FIM_PRE_ID, tokens.index("<|fim_prefix|>"))
        w.add_uint32(gguf.Keys.Tokenizer.FIM_PAD_ID, tokens.index("<|endoftext|>"))
    effective = {}
    for name, t in hf.items():
        arr = t.numpy().astype(np.float32)
        qtype = next((q for k, q in types.items() if k in name), Q.F32) if arr.ndim == 2 else Q.F32
        data = gguf.quants.quantize(arr, qtype)
        effective[name] = torch.from_numpy(np.array(gguf.quants.dequantize(data, qtype), dtype=np.float32))
        if arch == "llama" and name.endswith(("q_proj.weight", "k_proj.weight")):
            n = H if "q_proj" in name else Hkv
            # permute the stored bytes' rows: each row is quantized on its own, so this commutes
            data = llama_permute(data, n)
        if gguf_name(name) in skip:
            continue
        w.add_tensor(gguf_name(name), data, raw_dtype=qtype if qtype not in (Q.F32, Q.F16) else None)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return TinyGGUF(path, arch, tokens, merges, n_bpe, effective, hp)


def split_file(path: Path, folder: Path, n: int) -> list[Path]:
    """The file cut into n parts of about equal size (cuts fall inside header and tensors)."""
    data = Path(path).read_bytes()
    folder.mkdir(parents=True, exist_ok=True)
    cuts = [len(data) * i // n for i in range(n + 1)]
    parts = []
    for i in range(n):
        p = folder / f"part{i + 1:02d}.bin"
        p.write_bytes(data[cuts[i]: cuts[i + 1]])
        parts.append(p)
    return parts
