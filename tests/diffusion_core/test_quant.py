"""Packed weights (diffusion_core.network.quant): each kernel against the dequantized fp32 matmul, the Q4_K
regrouping against the gguf package's dequantizer, and whole models decoded on packed weights
against the uncached reference of the same packed model.

Tolerances: the kernels take bf16 activations and return bf16, accumulating in fp32. So the
reference multiplies the bf16-rounded input by the dequantized weights in fp32, and the
difference left is the output's rounding to bf16 (half an ulp: at most 2^-8 relative, bf16
keeping 8 significant bits) plus the order of the sums. The bound used is twice that, 2^-7
of sum(|x| * |w|), for a kernel build that rounds partial sums once more. A wrong packing, a
wrong group or a wrong scale is off by the order of |y| itself.
"""
from __future__ import annotations

import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

from diffusion_core.network import quant
from diffusion_core.generation.engine import Engine, HoleSpec
from diffusion_core.errors import CoreError
from diffusion_core.loading.loader import load_model
from diffusion_core.generation.params import FillParams

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "checkpoints"))
from gguf_fixtures import DEFAULT_TYPES, make_gguf  # noqa: E402

BOUND = 2.0 ** -7


def assert_close_to_reference(y: torch.Tensor, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None):
    xb = x.to(torch.bfloat16).float()
    ref = xb @ w.float().t() + (0 if bias is None else bias)
    scale = xb.abs() @ w.float().abs().t()
    err = (y.float() - ref).abs()
    assert bool((err <= BOUND * scale + 1e-6).all()), float((err / (scale + 1e-9)).max())


@pytest.mark.parametrize("n,k,m", [(64, 64, 1), (48, 96, 4), (40, 64, 3), (16, 256, 17)])
def test_int4_linear_equals_the_dequantized_matmul(n, k, m):
    gen = torch.Generator().manual_seed(n + k + m)
    w = torch.randn(n, k, generator=gen)
    q, scale, zero = quant.quantize_int4(w)
    entries = quant.pack_int4(q, scale, zero, "w")
    lin = quant.Int4Linear(entries["w.q4"], entries["w.q4sz"], k, n)
    x = torch.randn(m, k, generator=gen)
    y = lin(x)
    assert y.shape == (m, n) and y.dtype == torch.float32  # n = 40: padded rows are cut off
    assert_close_to_reference(y, x, quant.dequantize_int4(q, scale, zero))


def test_int4_groups_hold_each_value_within_half_a_step():
    w = torch.randn(32, 128, generator=torch.Generator().manual_seed(1))
    q, scale, zero = quant.quantize_int4(w)
    assert int(q.min()) >= 0 and int(q.max()) <= 15
    err = (quant.dequantize_int4(q, scale, zero) - w).abs().reshape(32, 4, 32)
    # half a step, plus what rounding scale and zero to bf16 moves the grid (at most 15 steps of it)
    step = scale.float()[..., None]
    assert bool((err <= 0.5 * step + 16 * 2.0 ** -8 * (step * 8 + zero.float().abs()[..., None])).all())


@pytest.mark.parametrize("m", [1, 4, 9])
def test_int8_linear_equals_the_dequantized_matmul(m):
    gen = torch.Generator().manual_seed(m)
    w, b = torch.randn(80, 64, generator=gen), torch.randn(80, generator=gen)
    q, scale = quant.quantize_int8(w)
    lin = quant.Int8Linear(q, scale, b)
    x = torch.randn(2, m, 64, generator=gen)
    y = lin(x)
    assert y.shape == (2, m, 80)
    assert_close_to_reference(y.reshape(-1, 80), x.reshape(-1, 64), q.float() * scale.float()[:, None], b)


def test_the_int4_dense_copy_holds_the_packed_values(monkeypatch):
    monkeypatch.setattr(quant, "dense_copies", lambda: True)
    w = torch.randn(48, 64, generator=torch.Generator().manual_seed(5))
    e = quant.pack_float("layers.0.mlp.up_proj.weight", w, "int4")
    lin = quant.packed_linear("layers.0.mlp.up_proj.weight", e, 64, 48, None)
    assert lin.dense is not None
    x = torch.randn(quant.DENSE_ROWS + 3, 64, generator=torch.Generator().manual_seed(6))
    dense = lin(x)  # enough rows: the dense GEMM
    saved, lin.dense = lin.dense, None
    packed = lin(x)
    assert_close_to_reference(dense, x, saved.float())
    assert_close_to_reference(packed, x, quant.simulated("layers.0.mlp.up_proj.weight", w, "int4"))
    assert quant.pack_float("lm_head.weight", w, "int4").keys().isdisjoint({"lm_head.weight.bf16"})


def test_int8_dequantizes_per_call_for_long_inputs_and_stores_no_copy(monkeypatch):
    monkeypatch.setattr(quant, "dense_copies", lambda: True)
    w = torch.randn(48, 64, generator=torch.Generator().manual_seed(5))
    e = quant.pack_float("layers.0.mlp.up_proj.weight", w, "int8")
    assert set(e) == {"layers.0.mlp.up_proj.weight.q8", "layers.0.mlp.up_proj.weight.q8s"}
    lin = quant.packed_linear("layers.0.mlp.up_proj.weight", e, 64, 48, None)
    assert lin.dense is None and lin.dequantize
    q, scale = e["layers.0.mlp.up_proj.weight.q8"], e["layers.0.mlp.up_proj.weight.q8s"]
    # bit for bit the values the fp32 product rounds to
    assert torch.equal(lin.dense_weight(quant.DEQUANT_ROWS), (q.float() * scale.float()[:, None]).to(torch.bfloat16))
    assert lin.dense_weight(quant.DEQUANT_ROWS - 1) is None  # short inputs: the kernel
    x = torch.randn(quant.DEQUANT_ROWS + 3, 64, generator=torch.Generator().manual_seed(6))
    reference = quant.simulated("layers.0.mlp.up_proj.weight", w, "int8")
    assert_close_to_reference(lin(x), x, reference)  # the dense GEMM
    lin.dequantize = False
    assert_close_to_reference(lin(x), x, reference)  # the kernel, same rows
    head = quant.packed_linear("lm_head.weight", quant.pack_float("lm_head.weight", w, "int8"), 64, 48, None)
    assert not head.dequantize  # the head never runs many rows


def test_zero_rows_give_an_empty_output():
    q, scale, zero = quant.quantize_int4(torch.randn(16, 32))
    e = quant.pack_int4(q, scale, zero, "w")
    assert quant.Int4Linear(e["w.q4"], e["w.q4sz"], 32, 16)(torch.empty(0, 32)).shape == (0, 16)
    assert quant.Int8Linear(*quant.quantize_int8(torch.randn(16, 32)))(torch.empty(0, 32)).shape == (0, 16)


def test_int8_embedding_rows():
    w = torch.randn(50, 64, generator=torch.Generator().manual_seed(2))
    e = quant.pack_float("embed_tokens.weight", w, "int8")
    emb = quant.Int8Embedding(e["embed_tokens.weight.q8"], e["embed_tokens.weight.q8s"])
    ids = torch.tensor([[0, 7, 49], [3, 3, 1]])
    got = emb(ids)
    expected = e["embed_tokens.weight.q8"].float()[ids] * e["embed_tokens.weight.q8s"][ids][..., None]
    assert torch.equal(got, expected)
    assert float((got - w[ids]).abs().max()) <= float(w.abs().max()) / 127 / 2 * 1.001


# -- Q4_K ------------------------------------------------------------------------------------

def random_q4_k(n_rows: int, k: int, seed: int, exact: bool) -> np.ndarray:
    """Raw Q4_K blocks: random nibbles and 6-bit scales/mins; exact: d = dmin = a power of two and
    sub-block scales below 32, so d*sc and 8*d*sc - dmin*m fit bf16 exactly."""
    rng = np.random.default_rng(seed)
    nb = n_rows * k // 256
    b = rng.integers(0, 256, (nb, 144), dtype=np.uint8)
    if exact:
        d = np.float16(2.0 ** -6)
        b[:, 0:2] = np.frombuffer(d.tobytes(), np.uint8)
        b[:, 2:4] = np.frombuffer(d.tobytes(), np.uint8)
        # scale bytes 0-3: six bits of sub-blocks 0-3's scales, two high bits of 4-7's; masked
        # so every scale is below 32 (4-7 keep only their low nibble, in bytes 8-11)
        b[:, 4:8] &= 0x1F
    else:
        d = rng.uniform(1e-4, 1e-2, nb).astype(np.float16)
        dmin = rng.uniform(1e-4, 1e-2, nb).astype(np.float16)
        b[:, 0:2] = d.view(np.uint8).reshape(nb, 2)
        b[:, 2:4] = dmin.view(np.uint8).reshape(nb, 2)
    return b.reshape(n_rows, k // 256 * 144)


def test_q4_k_regrouping_equals_the_gguf_dequantizer_bit_for_bit():
    blocks = random_q4_k(32, 512, seed=0, exact=True)
    q, scale, zero = quant.q4_k_groups(blocks, (32, 512))
    ours = quant.dequantize_int4(q, scale, zero)
    theirs = torch.from_numpy(np.asarray(gguf.quants.dequantize(blocks, gguf.GGMLQuantizationType.Q4_K), np.float32))
    assert torch.equal(ours, theirs)


def test_q4_k_regrouping_is_the_gguf_dequantizer_up_to_bf16_scales():
    blocks = random_q4_k(48, 256, seed=1, exact=False)
    q, scale, zero = quant.q4_k_groups(blocks, (48, 256))
    theirs = torch.from_numpy(np.asarray(gguf.quants.dequantize(blocks, gguf.GGMLQuantizationType.Q4_K), np.float32))
    ours = quant.dequantize_int4(q, scale, zero)
    # The documented rounding: scale and zero each to bf16 once (half an ulp: at most 2^-8
    # relative), so a value moves by at most |q - 8| * 2^-8 * |scale| + 2^-8 * |zero| (+ fp32's).
    s, z = scale.float().repeat_interleave(32, 1), zero.float().repeat_interleave(32, 1)
    bound = ((q.float() - 8).abs() * s.abs() + z.abs()) * 2.0 ** -8 * 1.01 + 1e-7
    assert bool(((ours - theirs).abs() <= bound).all())
    e = quant.pack_q4_k("w", blocks, (48, 256))
    x = torch.randn(3, 256, generator=torch.Generator().manual_seed(4))
    assert_close_to_reference(quant.Int4Linear(e["w.q4"], e["w.q4sz"], 256, 48)(x), x, ours)


# -- schemes -----------------------------------------------------------------------------------

def test_scheme_table():
    fmt = quant.tensor_format
    assert fmt("mixed", "layers.0.mlp.up_proj.weight", (96, 64), "Q5_0") == "int4"
    assert fmt("mixed", "layers.0.mlp.down_proj.weight", (64, 96), "Q6_K") == "int8"
    assert fmt("mixed", "lm_head.weight", (400, 64), "Q8_0") == "int8"
    assert fmt("mixed", "lm_head.weight", (400, 64)) == "int8"
    assert fmt("mixed", "layers.0.self_attn.q_proj.weight", (64, 64)) == "int4"
    assert fmt("int4", "layers.0.mlp.down_proj.weight", (64, 100)) == "int8"  # 100 inputs: no groups of 32
    assert fmt("int4", "embed_tokens.weight", (400, 64)) == "int8"
    assert fmt("int8", "layers.0.input_layernorm.weight", (64,)) == "float"
    assert fmt("float32", "lm_head.weight", (400, 64)) == "float"
    assert quant.resolve_scheme("auto", torch.device("cpu")) == "int8"
    assert quant.resolve_scheme("auto", torch.device("cuda")) == "float32"
    with pytest.raises(CoreError, match="CPU only"):
        quant.resolve_scheme("int4", torch.device("cuda"))
    with pytest.raises(CoreError, match="unknown scheme"):
        quant.resolve_scheme("int3", torch.device("cpu"))


# -- whole models --------------------------------------------------------------------------------

PREFIX = "def add(a, b):\n    return a + b\n\nclass Point:\n    def __init__(self, x, y):\n        self.x = "
SUFFIX = "\n        self.y = y\n"


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    return make_gguf(tmp_path_factory.mktemp("q") / "tiny.gguf", seed=3)


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def simulate(lm, scheme: str, types: dict) -> None:
    """lm's weights replaced in place by what `scheme` stores of them, dequantized (fp32)."""
    with torch.no_grad():
        for name, p in lm.model.named_parameters():
            kind = next((q.name for k, q in types.items() if k in name), "F32")
            p.copy_(quant.simulated(name, p, quant.tensor_format(scheme, name, tuple(p.shape), kind)))


@pytest.mark.parametrize("weights", ["int4", "int8", "auto"])
def test_packed_gguf_is_stored_packed_and_equals_its_dequantized_float_model(tiny_gguf, cache, weights):
    scheme = quant.resolve_scheme(weights, torch.device("cpu"))
    ref = load_model(tiny_gguf.path, "cpu", torch.float32, weights="float32")
    simulate(ref, scheme, DEFAULT_TYPES)
    lm = load_model(tiny_gguf.path, "cpu", torch.float32, weights=weights)
    assert lm.path.name.startswith(f"{lm.path.name[:64]}-{scheme}-")
    assert lm.weights == {"int4": "int4", "int8": "int8"}[scheme]
    assert isinstance(lm.model.embed_tokens, quant.Int8Embedding)
    ids = torch.tensor([lm.tokenizer.encode(PREFIX)])
    pos = torch.arange(ids.shape[1])[None]
    with torch.no_grad():
        got, want = lm.model(ids, pos, None), ref.model(ids, pos, None)
    # The same weights; what differs is bf16 activations into each matmul (2^-8 relative per
    # rounding, through 2 layers of a random model with peaked logits).
    assert float((got - want).abs().max()) < 0.05 * float(want.abs().max())
    best = want.topk(2, -1).values
    clear = best[..., 0] - best[..., 1] > 0.02 * want.abs().max()  # near ties may flip
    assert clear.sum() >= clear.numel() // 3
    assert (got.argmax(-1) == want.argmax(-1))[clear].float().mean() >= 0.95
    again = load_model(tiny_gguf.path, "cpu", torch.float32, weights=weights)  # from the cache, packed
    with torch.no_grad():
        assert torch.equal(again.model(ids, pos, None), got)


@pytest.mark.parametrize("dense_rows", [10 ** 9, 1], ids=["packed kernels", "dense copies"])
@pytest.mark.parametrize("weights", ["int4", "int8"])
def test_ar_exact_on_packed_weights_equals_the_uncached_reference(tiny_gguf, cache, weights, dense_rows, monkeypatch):
    """Each arithmetic path on its own: a fill that mixes them (dense copies for a long
    context, packed kernels for its decode steps) agrees with either up to bf16 rounding."""
    monkeypatch.setattr(quant, "dense_copies", lambda: True)
    monkeypatch.setattr(quant, "DENSE_ROWS", dense_rows)
    monkeypatch.setattr(quant, "DEQUANT_ROWS", dense_rows)
    eng = Engine.load(tiny_gguf.path, "cpu", dtype=torch.float32, weights=weights)
    up, head = eng.model.layers[0].mlp.up_proj, eng.model.lm_head
    assert (up.dense_weight(64) is not None) == (dense_rows == 1) and head.dense_weight(64) is None
    cached = eng.fill([PREFIX, SUFFIX], [HoleSpec(12)], FillParams(strategy="ar"))
    uncached = eng.fill([PREFIX, SUFFIX], [HoleSpec(12)], FillParams(strategy="ar", cache="none"))
    assert cached.token_ids == uncached.token_ids
    lossless = eng.fill([PREFIX, SUFFIX], [HoleSpec(12)], FillParams(strategy="lossless"))
    assert lossless.token_ids == uncached.token_ids


def test_float_folder_packs_in_memory_when_asked(tmp_path):
    from evaluation.tiny_model import make_tiny_model

    folder = make_tiny_model(tmp_path / "m", seed=1)
    assert load_model(folder, "cpu", weights="auto").weights == "float32"  # auto keeps a folder's floats
    lm = load_model(folder, "cpu", weights="int4")
    assert isinstance(lm.model.layers[0].mlp.up_proj, quant.Int4Linear)
    assert lm.model.num_parameters() == load_model(folder, "cpu").model.num_parameters()


def test_a_stored_packed_tensor_of_the_wrong_shape_is_one_line():
    q, scale, zero = quant.quantize_int4(torch.randn(32, 64))
    e = quant.pack_int4(q, scale, zero, "w")
    with pytest.raises(CoreError, match="stored int4 tensors have shapes"):
        quant.packed_linear("w", e, 64, 48, None)


def test_a_cache_packed_for_another_layout_is_not_reused(tiny_gguf, cache, monkeypatch):
    """The int4 layout is blocked for the CPU that packed it: a copy packed under another
    fingerprint (another CPU or torch build) is never loaded; a new one is packed beside it."""
    first = load_model(tiny_gguf.path, "cpu", torch.float32, weights="int4").path
    monkeypatch.setattr(quant, "layout_fingerprint", lambda: "0123456789ab")
    second = load_model(tiny_gguf.path, "cpu", torch.float32, weights="int4").path
    assert second != first and second.name.endswith("-int4-0123456789ab") and first.is_dir()
