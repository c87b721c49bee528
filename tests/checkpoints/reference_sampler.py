"""The slow, obviously correct denoising loop the engine's fast path is tested against.

Owns `denoise_reference`: a full uncached forward over the whole sequence every step and
plain Python per hole, built from the sampler's rules (`diffusion_core.generation.sampler`), so a
test compares the engine's cached, batched steps with the same rules run the plain way.
Test-only: the product never runs it.
"""
from __future__ import annotations

from typing import Callable

import torch

from diffusion_core.errors import CoreError, FillCancelled
from diffusion_core.generation.params import FillParams
from diffusion_core.generation.sampler import HoleState, commit_hole, resize_holes, step_cap


def denoise_reference(full_logits: Callable[[torch.Tensor], torch.Tensor], ids: torch.Tensor,
                      holes: list[tuple[int, int]], params: FillParams, mask_id: int, end_ids: tuple[int, ...],
                      shift: bool, cancel: Callable[[], bool] | None = None,
                      banned: tuple[int, ...] = (), expand_id: int | None = None,
                      budgets: list[int] | None = None,
                      allowed: dict[int, list[int]] | None = None) -> tuple[torch.Tensor, int]:
    """The slow, obviously correct loop: returns (final ids [T'], forward passes).

    full_logits(ids [T]) -> logits [T, V] is one uncached forward over the whole sequence.
    expand_id and budgets: DreamOn holes that grow and shrink (then T' may differ from T).
    allowed: position -> the only ids it may take (token healing's first hole position).
    """
    x = ids.clone()
    gen = torch.Generator().manual_seed(params.seed)
    variable = expand_id is not None and budgets is not None
    states = [HoleState(s, e, params.block_size, budget=b if variable else 0)
              for (s, e), b in zip(holes, budgets or [0] * len(holes))]
    passes = 0
    cap = step_cap([e - s for s, e in holes] if budgets is None else list(budgets), variable)
    while True:
        if cancel is not None and cancel():
            raise FillCancelled()
        if passes >= cap:
            raise CoreError(f"reference loop: no end after {passes} steps (cap {cap})")
        masked = x == mask_id
        blocks = [h.current_block(masked) for h in states]
        if all(b is None for b in blocks):
            return x, passes
        logits = full_logits(x)
        passes += 1
        for h, blk in zip(states, blocks):
            if blk is None:
                continue
            positions = [p for p in range(blk[0], blk[1]) if x[p] == mask_id]
            rows = [p - 1 if shift else p for p in positions]
            block_logits = logits[rows]
            for j, p in enumerate(positions):
                if allowed and p in allowed:
                    keep = torch.full_like(block_logits[j], float("-inf"))
                    keep[allowed[p]] = block_logits[j, allowed[p]]
                    block_logits[j] = keep
            commit_hole(x, h, blk, positions, block_logits, params, gen, end_ids, banned, expand_id)
            if h.current_block(x == mask_id) != blk:
                h.steps_in_block = 0
        if variable:
            x = resize_holes(x, states, mask_id, expand_id, end_ids)
