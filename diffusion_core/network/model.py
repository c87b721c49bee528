"""The mask predictor: a plain-torch transformer (RMSNorm, RoPE, SwiGLU, grouped-query attention).

Owns the network and its key/value cache. It does not know the token layout or the
sampler: callers pass ids, positions and attention masks (built in `layout`).

Two entry points share the same layers:
  * `forward(ids [B, T], pos [B, T], mask [B, 1, T, T])`: whole sequences (training, the
    uncached reference).
  * `forward_packed(ids [N], pos [N], segments)`: the tokens of several requests packed
    into one row, so the weight matmuls run once per step for all of them, while each
    segment attends to its own `KVCache` (inference).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ModelConfig
from .quant import logical_numel


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in fp32 for stability under bf16, as the Llama/Qwen2 reference does.
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rope_cos_sin(pos: torch.Tensor, inv_freq: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin [..., D] for positions pos [...] (rotate-half convention of Llama/Qwen2/LLaDA)."""
    freqs = pos.to(torch.float32)[..., None] * inv_freq  # [..., D/2]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


MIN_CACHE_SLOTS = 256


def pow2_bucket(n: int, minimum: int) -> int:
    """The smallest power of two >= n, and at least `minimum`."""
    return max(minimum, 1 << (max(n, 1) - 1).bit_length())


def capacity_bucket(n: int) -> int:
    """Cache capacities are powers of two (at least MIN_CACHE_SLOTS): growth stays geometric,
    and a static-shape step sees few distinct cache shapes, so few compiled graphs."""
    return pow2_bucket(n, MIN_CACHE_SLOTS)


class KVCache:
    """Keys/values of one sequence for every layer, in one preallocated tensor.

    data: [L, 2, Hkv, capacity, D]; slots [0, n) hold encoded tokens. A denoising step
    writes its own keys into the scratch slots after n without advancing n, so the
    context is never copied per step (gpt-fast's static-cache idea, grown on demand).
    """

    def __init__(self, cfg: ModelConfig, capacity: int, dtype: torch.dtype, device: torch.device):
        self.shape = (cfg.num_hidden_layers, 2, cfg.num_key_value_heads, cfg.head_dim)
        # Zeros, not empty: a static-shape step reads every slot under a mask, and a masked
        # slot holding NaN garbage would still poison the weighted sum (0 * NaN).
        self.data = torch.zeros(self._shape(capacity_bucket(capacity)), dtype=dtype, device=device)
        self.n = 0

    def _shape(self, cap: int) -> tuple[int, ...]:
        L, two, H, D = self.shape
        return (L, two, H, cap, D)

    @property
    def capacity(self) -> int:
        return self.data.shape[3]

    def reserve(self, total: int) -> None:
        if total <= self.capacity:
            return
        new = torch.zeros(self._shape(capacity_bucket(total)), dtype=self.data.dtype, device=self.data.device)
        new[:, :, :, : self.n] = self.data[:, :, :, : self.n]
        self.data = new

    def truncate(self, n: int) -> None:
        assert 0 <= n <= self.n
        self.n = n

    def clone(self, extra: int = 0) -> "KVCache":
        other = KVCache.__new__(KVCache)
        other.shape = self.shape
        other.data = torch.zeros(self._shape(capacity_bucket(self.n + max(extra, 16))), dtype=self.data.dtype,
                                 device=self.data.device)
        other.data[:, :, :, : self.n] = self.data[:, :, :, : self.n]
        other.n = self.n
        return other

    def nbytes(self) -> int:
        return self.data.numel() * self.data.element_size()


@dataclass
class Segment:
    """One request's slice [start, end) of a packed batch and how it attends.

    mode "append":    keys go to cache slots [n, n+T) and n advances (context encoding);
    mode "scratch":   keys go to [n, n+T), n stays (a denoising step over the hole region);
    mode "overwrite": keys replace the slots `write_at` and the whole cache [0, n) is
                      attended (approximate DualCache for bidirectional models).
    mask: [T, S] bool over the attended keys, True = may attend; None = attend to all.
    """

    start: int
    end: int
    cache: KVCache
    mode: str = "scratch"
    mask: torch.Tensor | None = None
    write_at: torch.Tensor | None = None


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head, self.n_kv, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.hidden_size, self.n_head * self.head_dim, bias=cfg.attention_bias)
        self.k_proj = nn.Linear(cfg.hidden_size, self.n_kv * self.head_dim, bias=cfg.attention_bias)
        self.v_proj = nn.Linear(cfg.hidden_size, self.n_kv * self.head_dim, bias=cfg.attention_bias)
        self.o_proj = nn.Linear(self.n_head * self.head_dim, cfg.hidden_size, bias=False)

    def project(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """x [..., T, C] -> q [..., H, T, D], k/v [..., Hkv, T, D] with RoPE applied to q and k."""
        *lead, T, _ = x.shape
        q = self.q_proj(x).view(*lead, T, self.n_head, self.head_dim).transpose(-3, -2)
        k = self.k_proj(x).view(*lead, T, self.n_kv, self.head_dim).transpose(-3, -2)
        v = self.v_proj(x).view(*lead, T, self.n_kv, self.head_dim).transpose(-3, -2)
        cos, sin = cos.unsqueeze(-3), sin.unsqueeze(-3)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def attend(self, q, k, v, mask):
        """q [..., H, T, D], k/v [..., Hkv, S, D], mask [..., T, S] bool or None -> [..., H, T, D].

        GQA by folding: the G query heads that share a key/value head are stacked along
        the query axis ([Hkv, G*T, D]), so SDPA reads each cached key once. SDPA's own
        enable_gqa path measured 6x slower on CPU at 16K keys (it expands K/V).
        """
        G = self.n_head // self.n_kv
        if G == 1:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        *lead, H, T, D = q.shape
        qf = q.reshape(*lead, self.n_kv, G * T, D)
        if mask is not None:
            mask = mask.repeat(*([1] * (mask.dim() - 2)), G, 1)
        y = F.scaled_dot_product_attention(qf, k, v, attn_mask=mask)
        return y.reshape(*lead, H, T, D)

    def forward(self, x, cos, sin, mask):
        """Whole sequences: x [B, T, C], mask [B, 1, T, T] bool or None (all visible)."""
        q, k, v = self.project(x, cos, sin)
        y = self.attend(q, k, v, mask)  # [B, H, T, D]
        B, _, T, _ = y.shape
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))

    def forward_packed(self, x, cos, sin, segments: list[Segment], layer: int):
        """Packed tokens: x [N, C]; each segment attends to its own cache (see Segment)."""
        q, k, v = self.project(x, cos, sin)  # q [H, N, D], k/v [Hkv, N, D]
        outs = []
        for seg in segments:
            cache, s, e = seg.cache, seg.start, seg.end
            kv = cache.data[layer]  # [2, Hkv, cap, D]
            if seg.mode == "overwrite":
                kv[0].index_copy_(1, seg.write_at, k[:, s:e])
                kv[1].index_copy_(1, seg.write_at, v[:, s:e])
                S = cache.n
            else:
                kv[0, :, cache.n : cache.n + e - s] = k[:, s:e]
                kv[1, :, cache.n : cache.n + e - s] = v[:, s:e]
                S = cache.n + e - s
            outs.append(self.attend(q[:, s:e], kv[0, :, :S], kv[1, :, :S], seg.mask))
        y = torch.cat(outs, dim=1)  # [H, N, D]
        return self.o_proj(y.transpose(0, 1).reshape(x.shape[0], -1))

    def forward_region(self, x, cos, sin, kv: torch.Tensor, mask: torch.Tensor):
        """A hole region against a whole cache at static shapes: x [R, C], kv [2, Hkv, cap, D]
        (read, never written), mask [R, cap + R] over cache slots then region keys."""
        q, k, v = self.project(x, cos, sin)  # q [H, R, D], k/v [Hkv, R, D]
        keys = torch.cat((kv[0], k), dim=1)
        values = torch.cat((kv[1], v), dim=1)
        y = self.attend(q, keys, values, mask)
        return self.o_proj(y.transpose(0, 1).reshape(x.shape[0], -1))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)


class Transformer(nn.Module):
    """Parameter names follow the HF Llama/Qwen2 layout (model.layers.N.self_attn.q_proj, ...)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.float32) / cfg.head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def init_weights(self, std: float = 0.02, generator: torch.Generator | None = None) -> None:
        for name, p in self.named_parameters():
            if name.endswith("norm.weight") or "layernorm" in name:
                nn.init.ones_(p)
            elif name.endswith(".bias"):
                nn.init.zeros_(p)
            else:
                nn.init.normal_(p, std=std, generator=generator)

    def new_cache(self, capacity: int) -> KVCache:
        p = self.norm.weight  # always dense (the embedding may be packed)
        return KVCache(self.config, capacity, p.dtype, p.device)

    def hidden(self, ids: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """ids/pos [B, T], mask [B, 1, T, T] bool (True = may attend) -> final hidden states [B, T, C]."""
        x = self.embed_tokens(ids)
        cos, sin = rope_cos_sin(pos, self.inv_freq, x.dtype)
        for layer in self.layers:
            x = x + layer.self_attn(layer.input_layernorm(x), cos, sin, mask)
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        return self.norm(x)

    def forward(self, ids: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Logits [B, T, V] for whole sequences (training and the uncached reference)."""
        return self.lm_head(self.hidden(ids, pos, mask))

    def forward_packed(self, ids: torch.Tensor, pos: torch.Tensor, segments: list[Segment],
                       out_rows: torch.Tensor | None = None) -> torch.Tensor:
        """ids/pos [N] of several requests packed together -> logits [len(out_rows) or N, V].

        Only the rows in out_rows go through the LM head: a step needs logits for the
        masked positions alone, and the head is the widest matmul of a small model.
        """
        x = self.embed_tokens(ids)
        cos, sin = rope_cos_sin(pos, self.inv_freq, x.dtype)
        for i, layer in enumerate(self.layers):
            x = x + layer.self_attn.forward_packed(layer.input_layernorm(x), cos, sin, segments, i)
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        for seg in segments:
            if seg.mode == "append":
                seg.cache.n += seg.end - seg.start
        if out_rows is not None:
            x = x[out_rows]
        return self.lm_head(self.norm(x))

    def forward_region(self, ids: torch.Tensor, pos: torch.Tensor, cache_data: torch.Tensor, n_ctx: torch.Tensor,
                       n_real: torch.Tensor) -> torch.Tensor:
        """One exact-cache denoising step at static shapes -> logits [R, V] for every region row.

        ids/pos [R]: the hole region padded to a bucket; cache_data [L, 2, Hkv, cap, D]: the
        context's keys/values in slots [0, n_ctx); n_ctx and n_real (the region's real
        length) are 0-dim tensors. The whole capacity is attended under a mask built from
        those tensors, and nothing is written: no shape or control flow depends on the
        data, so one CUDA graph per (R, cap) serves every request of that bucket.
        Same result as forward_packed with a "scratch" segment (tested).
        """
        R, cap = ids.shape[0], cache_data.shape[3]
        slot = torch.arange(cap, device=ids.device)
        row = torch.arange(R, device=ids.device)
        visible = torch.cat((slot < n_ctx, row < n_real))  # [cap + R]
        mask = visible[None, :].expand(R, cap + R)
        x = self.embed_tokens(ids)
        cos, sin = rope_cos_sin(pos, self.inv_freq, x.dtype)
        for i, layer in enumerate(self.layers):
            x = x + layer.self_attn.forward_region(layer.input_layernorm(x), cos, sin, cache_data[i], mask)
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        return self.lm_head(self.norm(x))

    def num_parameters(self) -> int:
        # packed modules hold their weights as buffers, not parameters
        tied = self.config.tie_word_embeddings  # a packed tied head is a second copy, not more weights
        packed = sum(logical_numel(m) for name, m in self.named_modules() if not (tied and name == "lm_head"))
        return sum(p.numel() for p in self.parameters()) + packed
