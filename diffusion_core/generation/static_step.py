"""Exact-cache denoising steps at bucketed static shapes, compiled once per bucket.

Owns the GPU latency path of a single request: the hole region is padded to a power-of-two
row bucket, the context cache is read at its (power-of-two) capacity, and
`Transformer.forward_region` runs at those static shapes. On CUDA each (rows, capacity)
bucket is compiled with torch.compile in "reduce-overhead" mode, which captures it in a
CUDA graph: a step of a small model is a few hundred tiny kernels, and replaying a graph
removes their launch cost. Elsewhere the same function runs eagerly (that is what the
tests compare with the packed step). Knows nothing of sampling or requests.
"""
from __future__ import annotations

import sys

import torch

from diffusion_core.network.model import KVCache, Transformer, pow2_bucket

MIN_REGION_ROWS = 16
MAX_COMPILED_BUCKETS = 8  # more distinct shapes than this run eagerly rather than recompile without end


def region_bucket(n: int) -> int:
    return pow2_bucket(n, MIN_REGION_ROWS)


class StaticSteps:
    def __init__(self, model: Transformer, compile: bool):
        self.model = model
        self._compiled = None
        if compile:
            try:
                self._compiled = torch.compile(model.forward_region, mode="reduce-overhead", dynamic=False, fullgraph=True)
            except Exception as exc:  # no compiler toolchain: the eager function is still correct
                print(f"diffill: torch.compile unavailable ({exc}); static steps run eagerly", file=sys.stderr)
        self.buckets: set[tuple[int, int]] = set()

    def _fn(self, rows: int, cap: int):
        if self._compiled is None:
            return self.model.forward_region
        if (rows, cap) not in self.buckets and len(self.buckets) >= MAX_COMPILED_BUCKETS:
            return self.model.forward_region
        self.buckets.add((rows, cap))
        return self._compiled

    @torch.inference_mode()
    def logits(self, cache: KVCache, region_ids: torch.Tensor, start_pos: int, rows: torch.Tensor) -> torch.Tensor:
        """Logits [len(rows), V] of region rows `rows` (indices into region_ids [R])."""
        dev = cache.data.device
        R = region_ids.shape[0]
        Rb = region_bucket(R)
        ids = torch.zeros(Rb, dtype=torch.long)
        ids[:R] = region_ids
        pos = torch.arange(start_pos, start_pos + Rb)
        n_ctx = torch.tensor(cache.n, device=dev)
        n_real = torch.tensor(R, device=dev)
        fn = self._fn(Rb, cache.capacity)
        out = fn(ids.to(dev), pos.to(dev), cache.data, n_ctx, n_real)
        return out[rows.to(dev)].clone()  # a graph's output buffer is reused by its next replay
