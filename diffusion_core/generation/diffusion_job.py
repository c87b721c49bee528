"""Decoding holes with a mask-diffusion model (layouts "diffill" and "natural"): one job's steps.

Owns one request's sequence and per-hole progress on the diffusion layouts, and its share
of each step's forward (`job.Job`). Every step commits masked positions of each hole's
current semi-autoregressive block (`sampler.commit_hole`: "threshold" or "topk"); the
rows a step forwards depend on the cache mode, chosen once per request (`Engine._mode`):
  * exact (our own "diffill" layout): the context is in the job's slot (encoded by its
    first steps, reused across requests by longest common prefix); a step runs only the
    hole region against it, writing nothing (the static step's input, `static_step`).
  * dual (approximate DualCache, Fast-dLLM, for bidirectional checkpoints): a full forward
    at the start of every block refreshes all keys/values; steps inside the block run only
    the block's tokens (and, with shifted logits, the token before it) against that cache.
  * none: a full forward over the whole sequence every step (the uncached reference).
DreamOn holes grow and shrink (`sampler.resize_holes`); token healing constrains a healed
hole's first position (`Engine._heals`); stop rules cut a hole's leading committed run.

Knows nothing of packing several jobs into one forward (the engine does that) or of the
wire protocol.
"""
from __future__ import annotations

import torch

from diffusion_core.network.model import Segment
from diffusion_core.tokens.layout import Layout, full_mask, logit_source
from diffusion_core.tokens.tokenizer import Heal
from .fill_types import FillResult, FillStats, HoleSpec
from .job import JobBase, JobEnv, StepRows
from .params import FillParams
from .sampler import HoleState, commit_hole, resize_holes, restrict, step_cap, stop_point, trim

CACHE_ROOM = 16  # slots past the sequence a step's cache reserves


class DiffusionJob(JobBase):
    """One request on a diffusion layout: its sequence, cache and per-hole progress."""

    def __init__(self, env: JobEnv, layout: Layout, params: FillParams, mode: str, cancel, on_step,
                 stats: FillStats, budgets: list[int], specs: list[HoleSpec], heals: list[Heal | None] | None = None):
        super().__init__(env, stats)
        self.layout, self.params, self.mode, self.specs = layout, params, mode, specs
        self.cancel, self.on_step = cancel, on_step
        if mode == "exact":  # the context is encoded by the job's first steps (encode_step)
            self.slot = env.claim(torch.tensor(layout.ids[: layout.n_context], dtype=torch.long), stats, self)
            self.cache = self.slot.cache
        else:
            self.cache = env.new_cache(len(layout.ids) + CACHE_ROOM)
        # Token healing (Engine._heals): a healed hole's first position may only take a token
        # that starts with the removed text, which the hole's text then drops.
        self.heals = heals or [None] * len(layout.holes)
        self._heal_ids = [env.tokenizer.heal_candidates(h.text.encode("utf-8"), whole=True) if h else None
                          for h in self.heals]
        self.x = torch.tensor(layout.ids, dtype=torch.long)  # [T] on the CPU: cheap to index per position
        # DreamOn holes grow and shrink up to their budgets; their positions live in self.holes.
        self.expand_id = env.tokenizer.special.expand if env.expanding else None
        self.holes = [HoleState(s, e, params.block_size, budget=b if env.expanding else 0)
                      for (s, e), b in zip(layout.holes, budgets)]
        self.gen = torch.Generator().manual_seed(params.seed)
        self.blocks: list[tuple[int, int] | None] = []
        self.max_steps = step_cap(budgets, env.expanding)
        self.cuts: list[int | None] = [None] * len(self.holes)
        self._refresh = True  # dual mode: the cache needs a full forward
        self._mask_id = env.tokenizer.special.mask
        self._positions: list[list[int]] = []  # the masked positions per hole of the planned step
        self._update_blocks()

    def progress(self) -> dict:
        """What a heartbeat says about this job (read from another thread: plain ints)."""
        slot = self.slot
        return {"phase": "encoding" if self.encoding else "decoding",
                "encoded": slot.cache.n if slot is not None and self.encoding else self.layout.n_context,
                "context": self.layout.n_context, "steps": self.steps, "tokens": self.stats.tokens_committed,
                "hole": 0, "holes": len(self.holes)}

    def finish(self, error: Exception | None = None) -> None:
        """End the job (an error ends it failed); the engine calls this for a cancel, a
        non-finite step or the step cap, the job itself when every hole is done."""
        self.done, self.error = True, error
        self._release()

    # -- steps -------------------------------------------------------------------------

    def plan(self) -> StepRows:
        """This step's rows: the masked positions of every hole's current block, and what
        the cache mode makes the forward carry to predict them."""
        self._positions = positions = self._masked_positions()
        flat = torch.tensor([p for hp in positions for p in hp], dtype=torch.long)
        shift = self.env.logits_shift
        T = len(self.x)
        if self.mode == "exact":
            lo = self.layout.n_context
            self.cache.reserve(T + CACHE_ROOM)
            seg = Segment(0, 0, self.cache, "scratch", None)
            return StepRows(self.x[lo:], torch.arange(lo, T), seg, logit_source(flat, shift) - lo, cached_region=True)
        if self.mode == "none" or self._take_refresh():
            # Full forward over everything; in dual mode it also refreshes the whole cache.
            self.cache.truncate(0)
            self.cache.reserve(T + CACHE_ROOM)
            mode = "append" if self.mode == "dual" else "scratch"
            seg = Segment(0, 0, self.cache, mode, full_mask(self.layout.kind, self.layout.n_context, T, self.env.device))
            return StepRows(self.x, torch.arange(T), seg, logit_source(flat, shift))
        # dual, inside a block: only the current blocks' tokens (and, with shifted logits,
        # the token before each block, whose output predicts the block's first token).
        active = sorted({p for blk in self.blocks if blk for p in range(blk[0] - (1 if shift else 0), blk[1])})
        act = torch.tensor(active, dtype=torch.long)
        index = {p: i for i, p in enumerate(active)}
        src = torch.tensor([index[int(p)] for p in logit_source(flat, shift)], dtype=torch.long)
        seg = Segment(0, 0, self.cache, "overwrite", None, act.to(self.env.device))
        return StepRows(self.x[act], act, seg, src)

    def apply(self, logits: torch.Tensor) -> int:
        """Commit this step's tokens given logits [masked positions of all holes, V] (plan's rows)."""
        committed, offset = 0, 0
        env = self.env
        for h, blk, hole_pos, heal_ids in zip(self.holes, self.blocks, self._positions, self._heal_ids):
            if blk is None:
                continue
            m = len(hole_pos)
            part = logits[offset : offset + m]
            if heal_ids is not None and h.start in hole_pos:
                j = hole_pos.index(h.start)
                part = torch.cat([part[:j], restrict(part[j : j + 1], heal_ids), part[j + 1:]])
            committed += commit_hole(self.x, h, blk, hole_pos, part, self.params, self.gen,
                                     env.end_ids, env.banned, self.expand_id)
            offset += m
        if self.expand_id is not None:
            resized = resize_holes(self.x, self.holes, self._mask_id, self.expand_id, env.end_ids)
            if resized is not self.x:  # positions moved: the next step needs a full forward
                self.x, self._refresh = resized, True
        else:
            self._apply_stops()
        self.steps += 1
        self.stats.tokens_committed += committed
        self._update_blocks()
        return committed

    def masked_left(self) -> int:
        return int((self.x == self._mask_id).sum())

    def result(self) -> FillResult:
        st = self._final_stats()
        ids = [trim(self.x[h.start : h.end].tolist(), self.env.end_ids) for h in self.holes]
        tok = self.env.tokenizer
        texts = [tok.decode_healed(i, heal)[:c] for i, c, heal in zip(ids, self.cuts, self.heals)]
        return FillResult(texts, st, ids)

    # -- blocks and stops --------------------------------------------------------------

    def _take_refresh(self) -> bool:
        """Whether this step must be a full forward (dual mode: the blocks moved, or the
        first step); asking clears it, as the step then runs that forward."""
        refresh, self._refresh = self._refresh, False
        return refresh

    def _update_blocks(self) -> None:
        masked = self.x == self._mask_id
        blocks = [h.current_block(masked) for h in self.holes]
        if self.mode == "dual" and blocks != self.blocks:
            self._refresh = True
        for h, old, new in zip(self.holes, self.blocks or [None] * len(blocks), blocks):
            if old != new:
                h.steps_in_block = 0
        self.blocks = blocks
        if all(b is None for b in blocks):
            self.finish()

    def _masked_positions(self) -> list[list[int]]:
        """Per hole, the masked positions of its current block."""
        out = []
        for blk in self.blocks:
            if blk is None:
                out.append([])
                continue
            seg = self.x[blk[0] : blk[1]]
            out.append((torch.nonzero(seg == self._mask_id).flatten() + blk[0]).tolist())
        return out

    def _apply_stops(self) -> None:
        """A hole whose leading committed run meets its stop rule is over: the rest become ends."""
        tok, end_ids = self.env.tokenizer, self.env.end_ids
        for i, (h, spec) in enumerate(zip(self.holes, self.specs)):
            if self.cuts[i] is not None or (spec.max_lines <= 0 and spec.dedent_below < 0 and spec.min_depth > 0):
                continue
            ids = self.x[h.start : h.end].tolist()
            run = next((j for j, t in enumerate(ids) if t == self._mask_id or t in end_ids), len(ids))
            cut = stop_point(tok.decode_healed(ids[:run], self.heals[i]), spec.max_lines, spec.dedent_below, spec.min_depth)
            if cut is not None:
                self.cuts[i] = cut
                if run < len(ids):
                    self.x[h.start + run : h.end] = end_ids[0]
