"""GGUF model files: read one (possibly split over several part files) into diffill's own model.

Owns what a GGUF file means to diffill: its metadata -> `ModelConfig` (architectures qwen2
and llama, loaded as layout "causal": a pretrained autoregressive FIM coder), its tokenizer
fields -> a `tokenizers` byte-level BPE (written as tokenizer.json by the cache), and its
tensors, dequantized by the `gguf` package (ggml's own reader and dequantizers, never by
hand), under diffill's tensor names, or handed to `quant` for packing (a Q4_K tensor's
blocks regrouped as int4 groups without dequantizing: `GGUFTensors.packed`). The header is parsed by `gguf.GGUFReader` itself, over
a read-only view that joins the parts without copying them (`PartsBuffer`).

It must not know where files come from (registry wheels: `base_model`) or where the
converted copy is kept (`model_cache`). Anything not understood is one CoreError line naming
the file and the key.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import gguf
import numpy as np
import torch

from diffusion_core.errors import CoreError
from diffusion_core.network import quant
from diffusion_core.network.config import ModelConfig
from diffusion_core.network.model import Transformer
from diffusion_core.tokens.infill_formats import CAUSAL_EOS_TOKEN as EOS_TOKEN
from diffusion_core.tokens.infill_formats import CAUSAL_MASK_TOKEN, CAUSAL_MAX_CONTEXT, FILE_SEP_TOKEN, FIM_TOKENS
from .checkpoints import QWEN2_SPLIT
from .gguf_header import BoundedReader

# The FIM tokens (infill_formats.FIM_TOKENS) are found by name in tokenizer.ggml.tokens; a
# file that carries tokenizer.ggml.fim_*_token_id wins (see special_names).
# Metadata keys of the optional FIM ids (llama.cpp writes them for models it knows as FIM coders).
FIM_ID_KEYS = {"pre": "tokenizer.ggml.fim_pre_token_id", "suf": "tokenizer.ggml.fim_suf_token_id",
               "mid": "tokenizer.ggml.fim_mid_token_id", "pad": "tokenizer.ggml.fim_pad_token_id"}

ARCHITECTURES = ("qwen2", "llama")

# Pre-tokenizer splits, by tokenizer.ggml.pre. qwen2: the regex of Qwen2's tokenizer.json
# (checkpoints.QWEN2_SPLIT); llama-bpe: Llama 3's, which differs only in \p{N}{1,3}.
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")

# llama.cpp tensor names -> ours (HF names without the "model." prefix; see model.Transformer).
TOP_NAMES = {"token_embd.weight": "embed_tokens.weight", "output_norm.weight": "norm.weight",
             "output.weight": "lm_head.weight"}
BLOCK_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight", "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.weight": "self_attn.k_proj.weight", "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.weight": "self_attn.v_proj.weight", "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight", "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}

DEQUANT_ROWS = 8192  # rows dequantized at once: bounds the float32 temporaries (see GGUFTensors)

Progress = Callable[[int, int, str], None]  # (done, total, what)


# -- the bytes: one or more part files as one read-only buffer ---------------------------------

class PartsBuffer:
    """Read-only bytes of part files concatenated in order, without copying them.

    Each part is one memory map. A slice inside one part is a view of that map; only a
    slice that straddles a boundary (a header string or a tensor split between two parts)
    is copied, and only that slice. Reading past the end means the file is truncated.
    """

    def __init__(self, parts: list[Path]):
        self.parts = [Path(p) for p in parts]
        self.name = str(self.parts[0]) if len(self.parts) == 1 else f"{self.parts[0]} (+{len(self.parts) - 1} parts)"
        self.maps: list[np.ndarray] = []
        self.starts = [0]
        for p in self.parts:
            size = p.stat().st_size
            # np.memmap refuses empty files; an empty part simply adds no bytes.
            m = np.memmap(p, mode="r").view(np.ndarray) if size else np.empty(0, np.uint8)
            self.maps.append(m)
            self.starts.append(self.starts[-1] + size)

    def __len__(self) -> int:
        return self.starts[-1]

    def __getitem__(self, key: slice) -> np.ndarray:
        assert isinstance(key, slice) and key.step is None, "GGUFReader slices bytes contiguously"
        a, b = key.start or 0, len(self) if key.stop is None else key.stop
        if b > len(self):
            raise CoreError(f"{self.name}: truncated GGUF file (needs byte {b:,}, has {len(self):,})")
        if a >= b:
            return np.empty(0, np.uint8)
        i = bisect.bisect_right(self.starts, a) - 1
        if b <= self.starts[i + 1]:
            return self.maps[i][a - self.starts[i]: b - self.starts[i]]
        pieces = []
        while a < b:
            end = min(b, self.starts[i + 1])
            pieces.append(self.maps[i][a - self.starts[i]: end - self.starts[i]])
            a, i = end, i + 1
        return np.concatenate(pieces)


class PartsReader(BoundedReader):
    """ggml's own GGUF parser over a PartsBuffer, every count bounded by the file (gguf_header).

    GGUFReader.__init__ memory-maps the one path it is given into self.data and then reads
    every field and tensor through self.data[a:b]. Making `data` a property that always
    answers our PartsBuffer (and drops that first map) reuses all of its parsing over the
    joined parts, with no second copy of the file.
    """

    data = property(lambda self: self._buffer, lambda self, _unused: None)

    def __init__(self, buffer: PartsBuffer):
        self._buffer = buffer
        super().__init__(buffer.parts[0])

    def _build_tensors(self, start_offs, fields) -> None:
        # GGUFReader would fail on GGMLQuantizationType(raw) without naming the tensor.
        known = {int(t) for t in gguf.GGMLQuantizationType}
        for f in fields:  # parts: name length, name, n_dims, dims, type, offset
            if int(f.parts[4][0]) not in known:
                raise CoreError(f"{self._buffer.name}: tensor {bytes(f.parts[1]).decode(errors='replace')!r} "
                                f"has unknown ggml type {int(f.parts[4][0])}")
        super()._build_tensors(start_offs, fields)


def open_gguf(parts: list[Path] | Path) -> PartsReader:
    """A GGUF reader over one file or the ordered parts of one; bad files are one CoreError line."""
    parts = [Path(parts)] if isinstance(parts, (str, Path)) else [Path(p) for p in parts]
    for p in parts:
        if not p.is_file():
            raise CoreError(f"{p}: GGUF file not found")
    buffer = PartsBuffer(parts)
    magic = bytes(buffer[0: min(4, len(buffer))])
    if magic != b"GGUF":
        raise CoreError(f"{buffer.name}: not a GGUF file (bad magic {magic!r}, expected b'GGUF')")
    try:
        return PartsReader(buffer)
    except CoreError:
        raise
    except (ValueError, KeyError, IndexError, TypeError, UnicodeDecodeError, OverflowError, MemoryError) as e:
        # GGUFReader raises these for an unknown tensor or value type, a duplicate key, a
        # header cut short, or sizes that do not add up.
        raise CoreError(f"{buffer.name}: cannot read the GGUF header ({e.__class__.__name__}: {str(e)[:160]})") from None


def source_name(reader) -> str:
    return reader._buffer.name


# -- metadata -----------------------------------------------------------------------------------

def field(reader, key: str, default=None, required: bool = True):
    """A metadata value (str, int, float, bool or list); missing and required: one CoreError line."""
    f = reader.get_field(key)
    if f is None:
        if required and default is None:
            raise CoreError(f"{source_name(reader)}: missing GGUF key {key!r}")
        return default
    try:
        return f.contents()
    except (UnicodeDecodeError, ValueError, IndexError) as e:
        raise CoreError(f"{source_name(reader)}: GGUF key {key!r} is not readable ({e.__class__.__name__})") from None


def _f32_to_float(v: float) -> float:
    # GGUF stores these floats as float32 (1e-6 reads back as 9.99999997e-07); keep the
    # shortest decimal that is the same float32, as the original config.json wrote it.
    return float(np.format_float_positional(np.float32(v), unique=True, trim="-"))


def _int(reader, key: str, default=None) -> int:
    v = field(reader, key, default)
    if not isinstance(v, int) or isinstance(v, bool):
        raise CoreError(f"{source_name(reader)}: GGUF key {key!r} is {v!r}, expected one integer")
    return v


def _float(reader, key: str, default=None) -> float:
    v = field(reader, key, default)
    if not isinstance(v, (int, float)) or isinstance(v, bool):  # float("fast") named no key (issue 22)
        raise CoreError(f"{source_name(reader)}: GGUF key {key!r} is {v!r}, expected one number")
    return float(v)


def architecture(reader) -> str:
    arch = field(reader, "general.architecture")
    if arch not in ARCHITECTURES:
        raise CoreError(f"{source_name(reader)}: general.architecture {arch!r} is not supported "
                        f"(diffill reads {', '.join(ARCHITECTURES)})")
    return arch


def model_config(reader, tensor_shapes: dict[str, tuple[int, ...]], special: dict[str, str]) -> ModelConfig:
    """ModelConfig from the `{arch}.*` keys; features our network lacks fail naming the key."""
    src, arch = source_name(reader), architecture(reader)
    hidden = _int(reader, f"{arch}.embedding_length")
    heads = _int(reader, f"{arch}.attention.head_count")
    head_dim = hidden // heads if heads else 0
    for key in (f"{arch}.rope.dimension_count", f"{arch}.attention.key_length", f"{arch}.attention.value_length"):
        if reader.get_field(key) is not None and _int(reader, key) != head_dim:
            raise CoreError(f"{src}: GGUF key {key!r} is {_int(reader, key)}, diffill needs embedding_length / "
                            f"head_count = {head_dim}")
    scaling = field(reader, f"{arch}.rope.scaling.type", required=False)
    if scaling not in (None, "none"):
        raise CoreError(f"{src}: GGUF key '{arch}.rope.scaling.type' is {scaling!r}; RoPE scaling is not supported")
    if "embed_tokens.weight" not in tensor_shapes:
        raise CoreError(f"{src}: missing tensor 'token_embd.weight'")
    vocab = tensor_shapes["embed_tokens.weight"][0]
    context = _int(reader, f"{arch}.context_length")
    return ModelConfig.from_dict(dict(
        vocab_size=vocab, hidden_size=hidden, num_hidden_layers=_int(reader, f"{arch}.block_count"),
        num_attention_heads=heads, num_key_value_heads=_int(reader, f"{arch}.attention.head_count_kv", heads),
        intermediate_size=_int(reader, f"{arch}.feed_forward_length"), max_position_embeddings=context,
        rope_theta=_float(reader, f"{arch}.rope.freq_base", 10000.0),
        rms_norm_eps=_f32_to_float(_float(reader, f"{arch}.attention.layer_norm_rms_epsilon")),
        tie_word_embeddings="lm_head.weight" not in tensor_shapes,
        attention_bias="layers.0.self_attn.q_proj.bias" in tensor_shapes,
        logits_shift=True, layout="causal", model_type=arch, max_context=min(CAUSAL_MAX_CONTEXT, context),
        special_tokens=special,
    ), src)


# -- special tokens ---------------------------------------------------------------------------

def special_names(reader, tokens: list[str]) -> dict[str, str]:
    """Role -> token string (the contract with the engine: pre, suf, mid, pad, eos, mask, file_sep, eot).

    FIM roles: the file's fim_*_token_id when present, else the Qwen2.5-Coder names looked
    up in the vocabulary. eot: the metadata's eos_token_id when it is another token (an
    instruct model's <|im_end|>); it also ends a hole.
    """
    src = source_name(reader)
    index = {t: i for i, t in enumerate(tokens)}

    def by_id(key: str) -> str | None:
        tid = field(reader, key, required=False)
        if tid is None:
            return None
        if not isinstance(tid, int) or not 0 <= tid < len(tokens):
            raise CoreError(f"{src}: GGUF key {key!r} is {tid!r}, not a token id of the {len(tokens)}-token vocabulary")
        return tokens[tid]

    names = {}
    for role, name in FIM_TOKENS.items():
        names[role] = by_id(FIM_ID_KEYS[role]) or name
    names["eos"] = EOS_TOKEN
    names["mask"] = CAUSAL_MASK_TOKEN
    names["file_sep"] = FILE_SEP_TOKEN
    eot = by_id("tokenizer.ggml.eos_token_id")
    if eot and eot != EOS_TOKEN:
        names["eot"] = eot
    for role in ("pre", "suf", "mid", "eos", "mask"):
        if names[role] not in index:
            raise CoreError(f"{src}: tokenizer.ggml.tokens has no {names[role]!r} ({role}): not a FIM coder diffill can use")
    return {role: name for role, name in names.items() if name in index}


# -- tokenizer ------------------------------------------------------------------------------

def build_tokenizer(reader, tokens: list[str] | None = None):
    """A `tokenizers.Tokenizer` from the tokenizer.ggml.* keys (byte-level BPE; pre-tokenizer qwen2 or llama-bpe).

    tokens: tokenizer.ggml.tokens when the caller has read them already (151,936 strings).
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    src = source_name(reader)
    kind = field(reader, "tokenizer.ggml.model")
    if kind != "gpt2":
        raise CoreError(f"{src}: tokenizer.ggml.model {kind!r} is not supported (diffill reads 'gpt2', byte-level BPE)")
    pre = field(reader, "tokenizer.ggml.pre", "default")
    splits = {"qwen2": QWEN2_SPLIT, "llama-bpe": LLAMA3_SPLIT}
    if pre not in splits:
        raise CoreError(f"{src}: tokenizer.ggml.pre {pre!r} is not supported (diffill reads {', '.join(splits)})")
    tokens = tokens if tokens is not None else field(reader, "tokenizer.ggml.tokens")
    types = field(reader, "tokenizer.ggml.token_type")
    merges = field(reader, "tokenizer.ggml.merges")
    if len(types) != len(tokens):
        raise CoreError(f"{src}: tokenizer.ggml.token_type has {len(types)} entries, tokenizer.ggml.tokens {len(tokens)}")
    pairs = []
    for i, m in enumerate(merges):
        a, sep, b = m.partition(" ")
        if not sep or not a or not b or " " in b:
            raise CoreError(f"{src}: tokenizer.ggml.merges[{i}] {m!r} is not two tokens separated by one space")
        pairs.append((a, b))
    vocab = {t: i for i, t in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise CoreError(f"{src}: tokenizer.ggml.tokens has duplicate entries")
    try:
        # Llama 3's tokenizer.json sets ignore_merges (a whole pre-token in the vocabulary is
        # taken as is); Qwen2's does not.
        bpe = models.BPE(vocab=vocab, merges=pairs, ignore_merges=pre == "llama-bpe")
    except Exception as e:  # tokenizers raises a bare Exception for a merge of unknown tokens
        raise CoreError(f"{src}: tokenizer.ggml.merges do not fit tokenizer.ggml.tokens ({str(e)[:120]})") from None
    tok = Tokenizer(bpe)
    if pre == "qwen2":
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(splits[pre]), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    # CONTROL tokens are special (<|endoftext|>, <|fim_prefix|>, ...), USER_DEFINED ones are
    # added words (<tool_call>); both are matched whole in text and keep their ids, since
    # they are already in the BPE vocabulary.
    control, user = int(gguf.TokenType.CONTROL), int(gguf.TokenType.USER_DEFINED)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t, k in zip(tokens, types) if k == control])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t, k in zip(tokens, types) if k == user])
    assert tok.get_vocab_size() == len(tokens)
    return tok


# -- tensors ----------------------------------------------------------------------------------

def our_name(name: str, n_layers: int, src: str) -> str:
    """llama.cpp's tensor name -> ours; an unknown name is one CoreError line."""
    if name in TOP_NAMES:
        return TOP_NAMES[name]
    head, _, rest = name.partition(".")
    layer, _, suffix = rest.partition(".")
    if head == "blk" and layer.isdigit() and int(layer) < n_layers and suffix in BLOCK_NAMES:
        return f"layers.{int(layer)}.{BLOCK_NAMES[suffix]}"
    raise CoreError(f"{src}: tensor {name!r} is not one diffill maps (expected token_embd, output_norm, "
                    f"output or blk.N.{{{', '.join(sorted({k.split('.')[0] for k in BLOCK_NAMES}))}}})")


def gguf_name(ours: str) -> str:
    """Our tensor name -> llama.cpp's (for error messages)."""
    top = {v: k for k, v in TOP_NAMES.items()}
    if ours in top:
        return top[ours]
    _, layer, rest = ours.split(".", 2)
    return f"blk.{layer}." + {v: k for k, v in BLOCK_NAMES.items()}[rest]


def unpermute_qk(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Undo llama.cpp's q/k permutation for architecture llama (convert_hf_to_gguf.py's `permute`).

    llama.cpp stores each head's rows interleaved (pairs for its rotate-adjacent RoPE); HF
    Llama and our `apply_rope` rotate halves, so each head's rows go back to [evens, odds].
    Qwen2 GGUFs are written without the permutation (llama.cpp runs them in NEOX mode).
    """
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


@dataclass
class GGUFTensors:
    """Tensor shapes under our names, and a generator of the dequantized float32 tensors."""

    shapes: dict[str, tuple[int, ...]]
    total_bytes: int  # bytes of the stored (quantized) tensors: the progress total
    reader: object

    def dequantized(self, cfg: ModelConfig, dtype: torch.dtype = torch.float32
                    ) -> Iterator[tuple[str, torch.Tensor, int]]:
        """(our name, tensor [rows, cols] as the HF layout has it, stored bytes), one at a time.

        Dequantized in float32 by the gguf package, DEQUANT_ROWS rows at a time into the
        output dtype: a whole 151,936-row head in float32 would be 544 MB of temporaries.
        """
        src = source_name(self.reader)
        for t in self.reader.tensors:
            name = our_name(t.name, cfg.num_hidden_layers, src)
            yield name, self._dequantize(t, name, cfg, dtype), int(t.n_bytes)

    def packed(self, cfg: ModelConfig, fmt_of: Callable[[str, tuple[int, ...], str], str]
               ) -> Iterator[tuple[str, dict[str, torch.Tensor], int]]:
        """(our name, its stored entries, stored bytes) per tensor, in the format fmt_of(name, shape,
        ggml type name) gives ("int4", "int8" or "float": `quant.tensor_format`).

        A Q4_K tensor asked for as int4 is regrouped straight from its blocks (`quant.pack_q4_k`);
        every other one is dequantized to float32 first and quantized from that.
        """
        src = source_name(self.reader)
        for t in self.reader.tensors:
            name = our_name(t.name, cfg.num_hidden_layers, src)
            shape = self.shapes[name]
            fmt = fmt_of(name, shape, t.tensor_type.name)
            if fmt == "int4" and t.tensor_type == gguf.GGMLQuantizationType.Q4_K and len(shape) == 2:
                q, scale, zero = quant.q4_k_groups(np.asarray(t.data), shape)
                if cfg.model_type == "llama" and name.endswith(("q_proj.weight", "k_proj.weight")):
                    n = cfg.num_attention_heads if name.endswith("q_proj.weight") else cfg.num_key_value_heads
                    q, scale, zero = (unpermute_qk(x, n).contiguous() for x in (q, scale, zero))
                entries = quant.pack_int4(q, scale, zero, name, quant.wants_dense(name))
            else:
                entries = quant.pack_float(name, self._dequantize(t, name, cfg, torch.float32), fmt)
            yield name, entries, int(t.n_bytes)

    def _dequantize(self, t, name: str, cfg: ModelConfig, dtype: torch.dtype) -> torch.Tensor:
        """One tensor dequantized by the gguf package, DEQUANT_ROWS rows at a time, in the HF layout."""
        src = source_name(self.reader)
        shape = self.shapes[name]
        out = torch.empty(shape, dtype=dtype)
        rows = t.data.reshape(-1, t.data.shape[-1]) if t.data.ndim > 1 else t.data.reshape(1, -1)
        flat = out.view(rows.shape[0], -1)
        for a in range(0, rows.shape[0], DEQUANT_ROWS):
            try:
                w = gguf.quants.dequantize(rows[a: a + DEQUANT_ROWS], t.tensor_type)
            except NotImplementedError:
                raise CoreError(f"{src}: tensor {t.name!r} has type {t.tensor_type.name}, which the gguf "
                                "package cannot dequantize") from None
            # copy=True: an F32 tensor comes back as a read-only view of the memory map
            flat[a: a + DEQUANT_ROWS] = torch.from_numpy(np.array(w, dtype=np.float32, copy=True))
        if cfg.model_type == "llama" and name.endswith(("q_proj.weight", "k_proj.weight")):
            n = cfg.num_attention_heads if name.endswith("q_proj.weight") else cfg.num_key_value_heads
            out = unpermute_qk(out, n).contiguous()
        return out


def read_tensors_info(reader) -> GGUFTensors:
    """Check the tensor table (names, types, shapes) before anything is dequantized."""
    src = source_name(reader)
    n_layers = _int(reader, f"{architecture(reader)}.block_count")
    shapes: dict[str, tuple[int, ...]] = {}
    total = 0
    for t in reader.tensors:
        name = our_name(t.name, n_layers, src)
        if t.tensor_type not in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16,
                                 gguf.GGMLQuantizationType.BF16) and t.tensor_type not in gguf.quants._type_traits:
            raise CoreError(f"{src}: tensor {t.name!r} has type {t.tensor_type.name}, which the gguf package "
                            "cannot dequantize")
        # ggml lists dimensions innermost first; reversed they are torch's [out, in] (rows, cols).
        shapes[name] = tuple(int(d) for d in reversed(t.shape.tolist()))
        total += int(t.n_bytes)
    return GGUFTensors(shapes, total, reader)


@dataclass
class GGUFModel:
    """What a GGUF file holds, in diffill's terms; tensors are dequantized on demand."""

    config: ModelConfig
    special: dict[str, str]
    tokenizer: object  # tokenizers.Tokenizer
    tensors: GGUFTensors
    metadata: dict  # general.* strings, for provenance

    def check_complete(self) -> None:
        """Every tensor our Transformer has is in the file (before a long conversion starts)."""
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in Transformer(self.config).state_dict().items()}
        if self.config.tie_word_embeddings:
            expected.pop("lm_head.weight", None)
        for key, shape in expected.items():
            got = self.tensors.shapes.get(key)
            if got is None:
                raise CoreError(f"{source_name(self.tensors.reader)}: missing tensor {gguf_name(key)!r}")
            if got != shape:
                raise CoreError(f"{source_name(self.tensors.reader)}: tensor {gguf_name(key)!r} has shape {got}, "
                                f"the metadata implies {shape}")


def read_gguf(parts: list[Path] | Path) -> GGUFModel:
    """Parse a GGUF file (or its ordered parts): config, special tokens, tokenizer, tensor table."""
    reader = open_gguf(parts)
    architecture(reader)
    tensors = read_tensors_info(reader)
    tokens = field(reader, "tokenizer.ggml.tokens")
    tok = build_tokenizer(reader, tokens)
    special = special_names(reader, tokens)
    cfg = model_config(reader, tensors.shapes, special)
    if len(tokens) > cfg.vocab_size:
        raise CoreError(f"{source_name(reader)}: tokenizer.ggml.tokens has {len(tokens)} entries, "
                        f"token_embd.weight only {cfg.vocab_size} rows")
    meta = {k: field(reader, k, required=False) for k in ("general.name", "general.license", "general.basename",
                                                          "general.finetune", "general.size_label")}
    model = GGUFModel(cfg, special, tok, tensors, {k: v for k, v in meta.items() if isinstance(v, str)})
    model.check_complete()
    return model
