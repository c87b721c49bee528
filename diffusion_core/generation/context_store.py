"""The contexts kept across requests: slots that each own a key/value cache and the tokens in it.

Owns cache ownership, in one place. As in llama.cpp's server (tools/server/server.cpp, a
slot and its `cache_tokens`), a `Slot` owns one `KVCache` and names exactly the tokens
whose keys/values fill its slots [0, cache.n). The `ContextStore` keeps the few most recent
slots (about one per recent document) and hands a request the one sharing the longest token
prefix with its context (`claim`); a job encodes into its slot (`JobEnv.encode`, in
`job`) and gives it back with whatever the cache holds (`Slot.release`), however far it got,
so a cancelled request's encode is reused by the next. A slot has one owner at a time; a
background warm-up's slot is taken over by the request for the same context.

Knows nothing of the model (a fresh slot's cache comes from the caller's `new_cache`), of
layouts, holes or sampling.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from diffusion_core.network.model import KVCache
from .fill_types import FillStats

CONTEXT_STORE_SIZE = 4  # slots kept for reuse across requests (one per recent document)
# Scratch room a claimed slot's cache gets past the context it will hold (decode steps' rows).
CLAIM_ROOM = 256


@dataclass(eq=False)  # slots are found by identity: comparing id tensors with == would raise
class Slot:
    ids: torch.Tensor  # [n] the context ids whose keys/values are in cache slots [0, n)
    cache: KVCache
    in_use: bool = False
    owner: object = None  # the job holding it while in_use (a warm-up's is taken over by a request)
    target: torch.Tensor | None = None  # [m] the context its owner wants in the cache; None once it is

    def left(self) -> int:
        """Tokens of the target still to encode."""
        return len(self.target) - self.cache.n if self.target is not None else 0

    def release(self, tokens: list[int] | torch.Tensor | None = None) -> None:
        """Its owner is done with it: the slot keeps what its cache holds (``tokens``, the
        sequence whose keys fill slots [0, cache.n), when they go past ``ids``) for the
        next request."""
        if tokens is not None:
            self.ids = torch.as_tensor(list(tokens[: self.cache.n]) if not isinstance(tokens, torch.Tensor)
                                       else tokens[: self.cache.n], dtype=torch.long)
        elif len(self.ids) > self.cache.n:
            self.ids = self.ids[: self.cache.n]
        self.in_use, self.owner, self.target = False, None, None


class ContextStore:
    def __init__(self, size: int = CONTEXT_STORE_SIZE):
        self.size = size
        self.slots: list[Slot] = []

    def forget(self) -> None:
        """Drop every slot (benchmarks measuring a cold start)."""
        self.slots.clear()

    def claim(self, ids: torch.Tensor, stats: FillStats, owner: object,
              new_cache: Callable[[int], KVCache]) -> Slot:
        """The slot ``owner`` encodes the context ``ids`` [n] into: the one sharing the longest
        prefix with it, truncated to that prefix (cloned when another job holds it), else a
        fresh one. Nothing is encoded here: the job's steps do it in chunks, so a scheduler
        can cancel or preempt a long encode between two of them."""
        best, best_n = None, 0
        for slot in self.slots:
            n = min(len(slot.ids), len(ids), slot.cache.n)  # only slots that hold keys count
            same = (slot.ids[:n] == ids[:n]).to(torch.int8)
            lcp = int(same.cumprod(0).sum()) if n else 0
            if lcp > best_n or best is None:
                best, best_n = slot, lcp
        if best is not None and best.in_use and best.owner is not None and best.owner.warm and best_n > 0:
            # A background warm-up is encoding this very context: the request joins that
            # work (takes the cache over where it stands) instead of copying or redoing it.
            best.owner.finish()
        # Reuse in place only when most of the stored context survives: otherwise another
        # document's cache would be cut down to its first few tokens.
        if best is not None and best_n > 0 and (best.in_use or 2 * best_n >= len(best.ids)):
            if best.in_use:
                cache = best.cache.clone(len(ids) - best_n + CLAIM_ROOM)
                cache.truncate(best_n)
                slot = Slot(ids[:best_n], cache)
                self._remember(slot)
            else:
                slot = best
                slot.cache.truncate(best_n)
                slot.ids = ids[:best_n]
                self.slots.remove(slot)
                self.slots.append(slot)
        else:
            slot = Slot(ids[:0], new_cache(len(ids) + CLAIM_ROOM))
            self._remember(slot)
        slot.in_use, slot.owner = True, owner
        slot.target = ids if slot.cache.n < len(ids) else None
        stats.reused_tokens += slot.cache.n
        return slot

    def _remember(self, slot: Slot) -> None:
        self.slots.append(slot)
        idle = [s for s in self.slots if not s.in_use and s is not slot]
        while len(self.slots) > self.size and idle:
            self.slots.remove(idle.pop(0))
