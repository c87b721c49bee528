"""Packed weights: int4 and int8 weight-only linears and an int8 embedding, on torch's CPU kernels.

Owns the packed formats, how a float or GGUF tensor becomes one (`pack_float`, `pack_q4_k`),
the modules that run them (`Int4Linear`, `Int8Linear`, `Int8Embedding`), which format each
tensor of a model gets under a weights scheme (`tensor_format`), and the fingerprint of the
kernel's packed layout that a stored copy must match (`layout_fingerprint`). Must not know
files, the cache's layout or GGUF files (it is handed a tensor's blocks and their type name).

Formats (per tensor):
  int4  groups of GROUP_SIZE values along the input, each with a bf16 scale and zero:
        w = (q - 8) * scale + zero, q in 0..15, stored in the layout
        `torch._convert_weight_to_int4pack_for_cpu` makes (ISA-blocked, so the cache is keyed
        by `layout_fingerprint`); run by `torch._weight_int4pack_mm_for_cpu`.
  int8  one bf16 scale per output row: w = q * scale, q in -127..127; `torch._weight_int8pack_mm`.
  Both kernels take bf16 activations (with fp32 ones they ran slower than fp32 matmuls:
  docs/benchmarks.md), so a packed linear casts its input to bf16 and its output back to the
  residual stream's dtype. Norms, RoPE, attention, the residual stream and the key/value
  cache stay fp32: they are a few percent of a step and carry the accumulated signal.
  The embedding is int8 per row (a lookup dequantizes only the rows it reads).

The formats are CPU-only: a GPU runs the dense bf16 weights (`float32` and `auto` there).
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from diffusion_core.errors import CoreError
from diffusion_core.protocol import WEIGHTS_SCHEMES

GROUP_SIZE = 32  # int4 group: one Q4_K sub-block; g64/g128 ran 1.4x slower at one row here (docs/benchmarks.md)
N_ALIGN = 16  # the int4 kernel packs output rows in sixteens; other counts are padded with zero rows
INT8_MAX = 127

# The user's setting. "auto": the packed mix on a CPU, dense bf16 on a GPU; "float32": the
# weights dequantized exactly, the reference every test and benchmark compares against.
SCHEMES = WEIGHTS_SCHEMES
PACKED_SCHEMES = ("mixed", "int4", "int8")  # what runs on a CPU ("auto" -> AUTO_CPU; "mixed" kept for bench_weights-style comparisons)
# int8: the only scheme within the quality gate (64 held-out holes + 64 execution problems vs
# float32: exact 0.250 vs 0.266 (one hole), pass@1 0.469 = 0.469; teacher-forced top-1 0.980);
# mixed lost 2 problems (pass@1 0.438) and int4 3 (0.422), though 22-30% faster per step.
AUTO_CPU = "int8"

# Stored tensor names: "<weight name><suffix>".
INT4_SUFFIX, INT4_SZ_SUFFIX = ".q4", ".q4sz"  # packed uint8 [N', K/2]; bf16 [K/G, N', 2] (scale, zero)
INT8_SUFFIX, INT8_SCALE_SUFFIX = ".q8", ".q8s"  # int8 [N, K]; bf16 [N] (fp32 [N] for the embedding)
DENSE_SUFFIX = ".bf16"  # bf16 [N, K]: the packed values dequantized, for context encoding (PackedLinear)
PACKED_SUFFIXES = (INT4_SUFFIX, INT4_SZ_SUFFIX, INT8_SUFFIX, INT8_SCALE_SUFFIX, DENSE_SUFFIX)
# Rows from which a packed linear runs a dense bf16 GEMM instead of its kernel (decode steps
# and verify forwards stay below both): int4 from its stored copy, int8 from its values
# dequantized per call, which costs a pass over the weights and so pays only for larger
# chunks, but stores nothing (the copies doubled the core's memory). Chosen by measurement:
# docs/benchmarks.md "Packed weights (issue 21)".
DENSE_ROWS = 32
DEQUANT_ROWS = 128
DENSE_FAMILIES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")  # not the head: encoding needs no logits

LINEAR_FAMILIES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head")
# "mixed": the GGUF's own precision choices kept where they fit: what llama.cpp stored in
# 8 bits or near it (Q8_0, Q6_K: the head and the sensitive v/down layers) becomes int8,
# 4-5-bit tensors (Q4_K exactly, Q5_0 re-quantized) become int4. Without a GGUF type
# (a float folder) the head is int8 and the rest int4.
MIXED_INT8_TYPES = ("Q8_0", "Q6_K", "F16", "BF16", "F32", "Q8_K")


def family(name: str) -> str | None:
    """The linear family of a weight name ("layers.3.mlp.up_proj.weight" -> "up_proj"), else None."""
    if name == "lm_head.weight":
        return "lm_head"
    if name.endswith(".weight"):
        f = name.rsplit(".", 2)[-2]
        return f if f in LINEAR_FAMILIES else None
    return None


def resolve_scheme(scheme: str, device: torch.device) -> str:
    """The setting -> what runs: "float32" (dense, the run dtype) or one of PACKED_SCHEMES."""
    if scheme not in SCHEMES:
        raise CoreError(f"weights: unknown scheme {scheme!r} (use {', '.join(SCHEMES)})")
    if device.type != "cpu":
        if scheme in ("int4", "int8"):
            raise CoreError(f"weights: {scheme} runs on a CPU only (torch's packed CPU kernels); use auto or float32 "
                            f"on {device}")
        return "float32"
    return AUTO_CPU if scheme == "auto" else scheme


def tensor_format(scheme: str, name: str, shape: tuple[int, ...], gguf_type: str | None = None) -> str:
    """"int4", "int8" or "float" (kept dense) for one tensor under a resolved packed scheme."""
    if scheme == "float32" or len(shape) != 2:
        return "float"
    if name == "embed_tokens.weight":
        return "int8"
    fam = family(name)
    if fam is None:
        return "float"
    if scheme == "int8":
        return "int8"
    want = "int4"
    if scheme == "mixed":
        int8 = gguf_type in MIXED_INT8_TYPES if gguf_type is not None else fam == "lm_head"
        want = "int8" if int8 else "int4"
    if want == "int4" and shape[1] % GROUP_SIZE:
        return "int8"  # the kernel's groups must tile the input
    return want


# -- packing --------------------------------------------------------------------------------

def _bf16(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.bfloat16)


def quantize_int4(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """w [N, K] float -> (q int32 [N, K] in 0..15, scale, zero bf16 [N, K/G]): min/max per group.

    The scale and zero are rounded to bf16 first and q is chosen against the rounded
    values, so (q - 8) * scale + zero is the nearest value the stored group can hold.
    """
    N, K = w.shape
    g = w.float().reshape(N, K // GROUP_SIZE, GROUP_SIZE)
    lo, hi = g.amin(-1), g.amax(-1)
    scale = _bf16(((hi - lo) / 15).clamp_min(1e-12))
    zero = _bf16(lo + 8 * scale.float())
    base = zero.float() - 8 * scale.float()  # the value of q = 0
    q = torch.round((g - base[..., None]) / scale.float()[..., None]).clamp_(0, 15)
    return q.reshape(N, K).to(torch.int32), scale, zero


def dequantize_int4(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """The reference: (q - 8) * scale + zero in fp32, [N, K]."""
    N, K = q.shape
    g = (q.float().reshape(N, K // GROUP_SIZE, GROUP_SIZE) - 8) * scale.float()[..., None] + zero.float()[..., None]
    return g.reshape(N, K)


def quantize_int8(w: torch.Tensor, scale_dtype: torch.dtype = torch.bfloat16) -> tuple[torch.Tensor, torch.Tensor]:
    """w [N, K] float -> (q int8 [N, K], scale [N] in scale_dtype): symmetric per row, q against the rounded scale."""
    w = w.float()
    scale = (w.abs().amax(-1) / INT8_MAX).clamp_min(1e-12).to(scale_dtype)
    q = torch.round(w / scale.float()[:, None]).clamp_(-INT8_MAX, INT8_MAX).to(torch.int8)
    return q, scale


def dense_copies() -> bool:
    """Whether packed layer weights get a dense bf16 copy for context encoding: on CPUs with
    bf16 matrix instructions (AVX512-BF16, AMX), where a dense bf16 GEMM of many rows beats
    the weight-only kernels; elsewhere dense bf16 runs slower than the packed kernels."""
    cpu = torch.cpu
    return bool(getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
                or getattr(cpu, "_is_amx_tile_supported", lambda: False)())


def wants_dense(name: str) -> bool:
    return family(name) in DENSE_FAMILIES and dense_copies()


def pack_int4(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, name: str,
              dense: bool = False) -> dict[str, torch.Tensor]:
    """Plain (q, scale, zero) -> the stored entries in the kernel's layout (rows padded to N_ALIGN),
    with the dense bf16 copy of the same values when asked."""
    N, K = q.shape
    extra = {name + DENSE_SUFFIX: dequantize_int4(q, scale, zero).to(torch.bfloat16)} if dense else {}
    pad = -N % N_ALIGN
    if pad:  # zero rows: q = 8 with scale and zero 0 is exactly 0
        q = torch.cat((q, torch.full((pad, K), 8, dtype=q.dtype)))
        scale = torch.cat((scale, torch.zeros(pad, scale.shape[1], dtype=scale.dtype)))
        zero = torch.cat((zero, torch.zeros(pad, zero.shape[1], dtype=zero.dtype)))
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.contiguous(), 1)
    sz = torch.stack((scale, zero), -1).transpose(0, 1).contiguous()  # [K/G, N', 2]
    return {name + INT4_SUFFIX: packed, name + INT4_SZ_SUFFIX: sz, **extra}


def pack_float(name: str, w: torch.Tensor, fmt: str) -> dict[str, torch.Tensor]:
    """A float tensor -> its stored entries in fmt ("float": the tensor itself, fp32)."""
    if fmt == "int4":
        return pack_int4(*quantize_int4(w), name, wants_dense(name))
    if fmt == "int8":
        # A lookup multiplies in fp32: the embedding keeps its row scales in fp32.
        q, scale = quantize_int8(w, torch.float32 if name == "embed_tokens.weight" else torch.bfloat16)
        return {name + INT8_SUFFIX: q, name + INT8_SCALE_SUFFIX: scale}
    return {name: w.float()}


# Q4_K (ggml's k-quants): super-blocks of 256 values as 8 sub-blocks of 32, 144 bytes: fp16 d,
# fp16 dmin, 12 bytes of 6-bit sub-block scales and mins, 128 bytes of nibbles; a value is
# d * sc[j] * q - dmin * m[j]. A sub-block is one int4 group: scale = d * sc[j], zero =
# 8 * scale - dmin * m[j] (the kernel's (q - 8) * scale + zero), each rounded to bf16 once.
Q4_K_BLOCK_BYTES, Q4_K_VALUES = 144, 256


def q4_k_groups(blocks: np.ndarray, shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A Q4_K tensor's raw blocks (uint8, [N, K/256*144]) -> (q int32 [N, K], scale, zero bf16 [N, K/32])."""
    import gguf

    N, K = shape
    b = np.ascontiguousarray(blocks, dtype=np.uint8).reshape(-1, Q4_K_BLOCK_BYTES)
    d = b[:, 0:2].copy().view(np.float16).astype(np.float32)  # [nb, 1]
    dmin = b[:, 2:4].copy().view(np.float16).astype(np.float32)
    sc, m = gguf.quants.Q4_K.get_scale_min(b[:, 4:16])  # [nb, 8] each: ggml's own unpacking
    qs = b[:, 16:].reshape(-1, 4, 1, 32) >> np.array([0, 4], dtype=np.uint8).reshape(1, 1, 2, 1)
    q = (qs & np.uint8(0x0F)).reshape(-1, 8, 32)  # sub-block 2c: low nibbles of chunk c, 2c+1: high
    exact = torch.from_numpy(d * sc.astype(np.float32))
    scale = _bf16(exact)
    # zero from the unrounded scale: a value is then off by (q - 8) * (its scale's rounding)
    # plus the zero's: |q - 8| <= 8 scale roundings, where the rounded scale would give q (up to 15)
    zero = _bf16(8 * exact - torch.from_numpy(dmin * m.astype(np.float32)))
    q = torch.from_numpy(q.astype(np.int32)).reshape(N, K)
    return q, scale.reshape(N, K // GROUP_SIZE), zero.reshape(N, K // GROUP_SIZE)


def pack_q4_k(name: str, blocks: np.ndarray, shape: tuple[int, int]) -> dict[str, torch.Tensor]:
    """A Q4_K tensor straight into int4 groups of 32 (no second quantization)."""
    return pack_int4(*q4_k_groups(blocks, shape), name, wants_dense(name))


def layout_fingerprint() -> str:
    """A short hash of the int4 kernel's packed layout on this CPU and torch build.

    The packing is blocked for the CPU's vector width, so a cache packed on another machine
    or torch release must not be reused: packing a fixed probe names the layout.
    """
    probe = (torch.arange(N_ALIGN * 2 * 64, dtype=torch.int32).reshape(N_ALIGN * 2, 64) * 7) % 16
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(probe, 1)
    h = hashlib.sha256(packed.contiguous().numpy().tobytes())
    h.update(torch.__version__.encode())
    h.update(b"dense-int4" if dense_copies() else b"")  # int4 tensors carry dense copies or not
    return h.hexdigest()[:12]


# -- modules ---------------------------------------------------------------------------------

class PackedLinear(nn.Module):
    """y = x @ W^T (+ bias) with W packed: x cast to bf16 for the kernel, y back to x's dtype.

    Context encoding (many rows) runs a dense bf16 GEMM on `dense_weight()` where that is
    cheaper: on a CPU with bf16 matrix units a dense GEMM of many rows beats the weight-only
    kernels (docs/benchmarks.md); decode steps of a few rows read the packed bytes, a quarter
    of the dense ones. `dense`: an optional stored bf16 copy of the same W (int4).
    """

    def __init__(self, in_features: int, out_features: int, bias: torch.Tensor | None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        self.dense: torch.Tensor | None = None

    def kernel(self, a: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def dense_weight(self, rows: int) -> torch.Tensor | None:
        """W in bf16 for an input of `rows` rows when a dense GEMM should run it, else None."""
        return self.dense if self.dense is not None and rows >= DENSE_ROWS else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        a = x.reshape(-1, self.in_features).to(torch.bfloat16).contiguous()
        if a.shape[0] == 0:
            return x.new_zeros(*lead, self.out_features)
        w = self.dense_weight(a.shape[0])
        y = self.kernel(a) if w is None else F.linear(a, w)
        if y.shape[-1] != self.out_features:
            y = y[:, : self.out_features]
        y = y.to(x.dtype)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*lead, self.out_features)


class Int4Linear(PackedLinear):
    """W in int4 groups of GROUP_SIZE (see the module docstring)."""

    def __init__(self, packed: torch.Tensor, sz: torch.Tensor, in_features: int, out_features: int,
                 bias: torch.Tensor | None = None):
        super().__init__(in_features, out_features, bias)
        self.register_buffer("packed", packed, persistent=False)
        self.register_buffer("sz", sz, persistent=False)

    def kernel(self, a: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten._weight_int4pack_mm_for_cpu(a, self.packed, GROUP_SIZE, self.sz)


class Int8Linear(PackedLinear):
    """W in int8 with one scale per output row."""

    def __init__(self, q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None):
        super().__init__(q.shape[1], q.shape[0], bias)
        self.register_buffer("q", q, persistent=False)
        self.register_buffer("scale", scale.to(torch.bfloat16), persistent=False)
        self.dequantize = False  # set per tensor by `packed_linear` (the layers', not the head's)

    def kernel(self, a: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten._weight_int8pack_mm(a, self.q, self.scale)

    def dense_weight(self, rows: int) -> torch.Tensor | None:
        if self.dense is not None or not self.dequantize or rows < DEQUANT_ROWS:
            return super().dense_weight(rows)
        # |q| <= 127 is exact in bf16, and a bf16 product rounds once: the same values as
        # (q.float() * scale.float()).to(bf16), five times faster to make
        return self.q.to(torch.bfloat16) * self.scale[:, None]


class Int8Embedding(nn.Module):
    """Rows of an int8 table with one fp32 scale per row, dequantized as they are looked up."""

    def __init__(self, q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.num_embeddings, self.embedding_dim = q.shape
        self.dtype = dtype
        self.register_buffer("q", q, persistent=False)
        self.register_buffer("scale", scale.float(), persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return (F.embedding(ids, self.q).to(torch.float32) * self.scale[ids][..., None]).to(self.dtype)

    def row(self, i: int) -> torch.Tensor:
        return self.forward(torch.tensor([i], device=self.q.device))[0]


PACKED_MODULES = (PackedLinear,)


def packed_linear(name: str, tensors: dict[str, torch.Tensor], in_features: int, out_features: int,
                  bias: torch.Tensor | None) -> nn.Module | None:
    """The packed module stored under weight name `name`, or None when it is stored dense."""
    if name + INT4_SUFFIX in tensors:
        packed, sz = tensors[name + INT4_SUFFIX], tensors[name + INT4_SZ_SUFFIX]
        n_pad = out_features + (-out_features % N_ALIGN)
        if packed.dtype != torch.uint8 or tuple(packed.shape) != (n_pad, in_features // 2) \
                or tuple(sz.shape) != (in_features // GROUP_SIZE, n_pad, 2):
            raise CoreError(f"{name}: stored int4 tensors have shapes {tuple(packed.shape)} / {tuple(sz.shape)}, "
                            f"the model needs [{n_pad}, {in_features // 2}] / [{in_features // GROUP_SIZE}, {n_pad}, 2]")
        return _with_dense(Int4Linear(packed, sz.to(torch.bfloat16), in_features, out_features, bias), name, tensors)
    if name + INT8_SUFFIX in tensors:
        q, scale = tensors[name + INT8_SUFFIX], tensors[name + INT8_SCALE_SUFFIX]
        if q.dtype != torch.int8 or tuple(q.shape) != (out_features, in_features) or tuple(scale.shape) != (out_features,):
            raise CoreError(f"{name}: stored int8 tensors have shapes {tuple(q.shape)} / {tuple(scale.shape)}, "
                            f"the model needs [{out_features}, {in_features}] / [{out_features}]")
        lin = _with_dense(Int8Linear(q, scale, bias), name, tensors)
        lin.dequantize = wants_dense(name)
        return lin
    return None


def simulated(name: str, w: torch.Tensor, fmt: str) -> torch.Tensor:
    """w as fmt stores it, dequantized to fp32: the float model a packed one approximates
    (tests' reference, and the quick ranking of schemes by quality before any kernel runs)."""
    if fmt == "int4":
        return dequantize_int4(*quantize_int4(w))
    if fmt == "int8":
        q, scale = quantize_int8(w, torch.float32 if name == "embed_tokens.weight" else torch.bfloat16)
        return q.float() * scale.float()[:, None]
    return w.float()


def _with_dense(mod: PackedLinear, name: str, tensors: dict[str, torch.Tensor]) -> PackedLinear:
    dense = tensors.get(name + DENSE_SUFFIX)
    if dense is not None:
        if dense.dtype != torch.bfloat16 or tuple(dense.shape) != (mod.out_features, mod.in_features):
            raise CoreError(f"{name}: stored dense copy is {dense.dtype} {tuple(dense.shape)}, the model needs "
                            f"bfloat16 [{mod.out_features}, {mod.in_features}]")
        mod.dense = dense
    return mod


def is_packed(tensors: dict[str, torch.Tensor]) -> bool:
    return any(k.endswith(PACKED_SUFFIXES) for k in tensors)


def pack_state(tensors: dict[str, torch.Tensor], scheme: str) -> dict[str, torch.Tensor]:
    """A dense state dict packed in memory under a resolved scheme (model folders with float weights)."""
    out: dict[str, torch.Tensor] = {}
    for name, w in tensors.items():
        out.update(pack_float(name, w, tensor_format(scheme, name, tuple(w.shape))) if w.dim() == 2 else {name: w})
    return out


def install(model: nn.Module, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Put the packed modules stored in `tensors` into `model` (built on the meta device).

    Replaces each nn.Linear and nn.Embedding whose weight is stored packed, consumes those
    entries, and returns the rest (norms, biases, dense weights) for `loader.assign_weights`.
    A biased linear's bias stays a parameter of the new module, loaded from the rest.
    """
    rest = dict(tensors)
    for name, mod in list(model.named_modules()):
        key = f"{name}.weight"
        if isinstance(mod, nn.Linear):
            bias = torch.empty(mod.out_features) if mod.bias is not None else None
            new = packed_linear(key, rest, mod.in_features, mod.out_features, bias)
        elif isinstance(mod, nn.Embedding) and key + INT8_SUFFIX in rest:
            q, scale = rest[key + INT8_SUFFIX], rest[key + INT8_SCALE_SUFFIX]
            if q.dtype != torch.int8 or tuple(q.shape) != (mod.num_embeddings, mod.embedding_dim):
                raise CoreError(f"{key}: stored int8 table has shape {tuple(q.shape)}, the model needs "
                                f"[{mod.num_embeddings}, {mod.embedding_dim}]")
            new = Int8Embedding(q, scale)
        else:
            continue
        if new is None:
            continue
        for suffix in PACKED_SUFFIXES:
            rest.pop(key + suffix, None)
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr, new)
    left = sorted(k for k in rest if k.endswith(PACKED_SUFFIXES))
    if left:
        raise CoreError(f"packed tensor {left[0]!r} has no matching module in the model")
    return rest


def logical_numel(mod: nn.Module) -> int:
    """Weights a packed module stands for (its buffers are not parameters)."""
    if isinstance(mod, PACKED_MODULES):
        return mod.in_features * mod.out_features
    if isinstance(mod, Int8Embedding):
        return mod.num_embeddings * mod.embedding_dim
    return 0
