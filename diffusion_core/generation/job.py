"""The job protocol: what `Engine.step` asks of every request in flight, and what a job may use.

Owns four small things:
  * `Job`, the protocol both decoders implement (`diffusion_job.DiffusionJob` for the
    diffusion layouts, `causal.CausalJob` for a pretrained AR coder) and `WarmJob` too: while
    it is `encoding` the engine gives it one context chunk a step (`encode_step`); otherwise
    it `plan`s its share of the step's forward (`StepRows`), the engine packs every job's
    rows into one forward pass and hands each its own logits (`apply`), until it is `done`;
    then `result()`. `finish(error)` ends it early (a cancel, a guard).
  * `StepRows`, one job's share of a packed forward.
  * `JobEnv`, the narrow view of the engine a job is built with (its "environment": in
    this code base "context" names the tokens around the holes): the model, the tokenizer
    and its special ids, the device, the ids that end a hole or are never text, and the
    context store its slot comes from. It claims a slot and encodes into it.
  * `JobBase`, what the jobs share: the slot and its encode steps, the finished stats; and
    `WarmJob`, a job that only encodes a context into the store.

Knows nothing of packing several jobs into one forward (the engine does that), of layouts,
holes or sampling.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol

import torch

from diffusion_core.network.model import KVCache, Segment, Transformer
from diffusion_core.tokens.layout import attention_mask
from .context_store import ContextStore, Slot
from .fill_types import FillResult, FillStats, StepInfo

if TYPE_CHECKING:  # annotations only
    from .draft_adapter import MaskAdapter
    from diffusion_core.tokens.tokenizer import Tokenizer

ENCODE_CHUNK = 1024  # context tokens per forward when encoding (bounds the [T, S] mask)
ENCODE_ROOM = 512  # slots reserved past an encoded chunk: room for the hole region's scratch rows


@dataclass
class StepRows:
    """One job's share of a step's forward: its tokens, their positions, how they attend
    (one `Segment`, whose start/end the engine sets where it packs them) and the rows
    whose logits the job reads, in the order `apply` takes them."""

    ids: torch.Tensor  # [T] token ids
    pos: torch.Tensor  # [T] absolute positions
    segment: Segment
    rows: torch.Tensor  # [R] indices into ids of the rows whose logits come back
    # The rows are a hole region after a context held whole in segment.cache, nothing
    # written (the exact cache): the engine may run it as a static step instead.
    cached_region: bool = False


@dataclass(frozen=True)
class JobEnv:
    """What a job may use of the engine (built per request by `Engine.job_env`)."""

    model: Transformer
    tokenizer: Tokenizer
    device: torch.device
    store: ContextStore
    end_ids: tuple[int, ...]  # tokens that end a hole
    banned: tuple[int, ...]  # tokens that are never text: never sampled
    attention: str  # the layout kind the context is encoded under (layout.attention_mask)
    logits_shift: bool  # Dream's shift: the output at p - 1 predicts the token at p
    encode_chunk: int = ENCODE_CHUNK  # context tokens per encode forward
    expanding: bool = False  # DreamOn holes grow by <|expand|> (sampler.resize_holes)
    drafter: MaskAdapter | None = None  # the causal layout's mask-row adapter (draft_adapter)
    mask_rows: int = 0  # mask rows per drafter block

    def new_cache(self, capacity: int) -> KVCache:
        return self.model.new_cache(capacity)

    def claim(self, ids: torch.Tensor, stats: FillStats, owner: object) -> Slot:
        """A slot for the context ``ids`` [n] (`ContextStore.claim`), owned by ``owner``."""
        return self.store.claim(ids, stats, owner, self.model.new_cache)

    def encode(self, slot: Slot, max_tokens: int, stats: FillStats) -> bool:
        """Encode up to ``max_tokens`` more of ``slot.target`` into its cache, in forwards of
        at most ``encode_chunk``; True (and the target cleared) once it is all there.
        ``slot.ids`` always names exactly the tokens whose keys are in slots [0, cache.n)."""
        t0 = time.perf_counter()
        ids, cache, dev = slot.target, slot.cache, self.device
        end = min(len(ids), cache.n + max_tokens)
        with torch.inference_mode():
            while cache.n < end:
                lo = cache.n
                hi = min(end, lo + self.encode_chunk)
                cache.reserve(hi + ENCODE_ROOM)
                mask = attention_mask(self.attention, len(ids), lo, hi - lo, hi, dev)
                seg = Segment(0, hi - lo, cache, "append", mask)
                pos = torch.arange(lo, hi, device=dev)
                self.model.forward_packed(ids[lo:hi].to(dev), pos, [seg], out_rows=torch.empty(0, dtype=torch.long, device=dev))
                slot.ids = ids[:hi]
        stats.encode_ms += (time.perf_counter() - t0) * 1e3
        if cache.n >= len(ids):
            slot.target = None
            return True
        return False


class Job(Protocol):
    """A request in flight, as `Engine.step` runs it (see the module docstring)."""

    warm: bool  # a background warm-up a real request may take over (ContextStore.claim)
    done: bool
    cancel: Callable[[], bool] | None  # polled before each step: True ends the job cancelled
    on_step: Callable[[StepInfo], None] | None  # after each decode step
    stats: FillStats
    steps: int
    max_steps: int  # the step cap for its budgets (sampler.step_cap)
    slot: Slot | None  # the stored context it encodes into and reads

    @property
    def encoding(self) -> bool: ...
    def encode_step(self, max_tokens: int) -> None: ...
    def plan(self) -> StepRows: ...
    def apply(self, logits: torch.Tensor) -> int: ...
    def masked_left(self) -> int: ...
    def progress(self) -> dict: ...
    def result(self) -> FillResult: ...
    def finish(self, error: Exception | None = None) -> None: ...


class JobBase:
    """The part of a job that every kind shares: its slot and the steps that encode into it."""

    warm = False
    cancel: Callable[[], bool] | None = None
    on_step: Callable[[StepInfo], None] | None = None

    def __init__(self, env: JobEnv, stats: FillStats):
        self.env, self.stats = env, stats
        self.slot: Slot | None = None
        self.done = False
        self.error: Exception | None = None
        self.steps = 0

    @property
    def encoding(self) -> bool:
        return self.slot is not None and self.slot.target is not None and not self.done

    def encode_step(self, max_tokens: int) -> None:
        """One chunk (at most ``max_tokens``) of the context still to encode."""
        if self.env.encode(self.slot, max_tokens, self.stats):
            self._encoded()

    def _encoded(self) -> None:
        """The context is all in the slot's cache (a hook: a warm-up is then done)."""

    def _release(self, tokens: list[int] | None = None) -> None:
        """Give the slot back, holding what its cache holds (``tokens``: past its context)."""
        slot, self.slot = self.slot, None
        if slot is not None:
            slot.release(tokens)

    def _final_stats(self) -> FillStats:
        """The stats of a finished job (its error raised)."""
        if self.error is not None:
            raise self.error
        assert self.done, "result() of an unfinished job"
        st = self.stats
        st.tokens_per_forward = st.tokens_committed / st.forward_passes if st.forward_passes else 0.0
        return st


class WarmJob(JobBase):
    """Encodes a context into the store and nothing else (Engine.warm): the scheduler steps
    it at idle priority; a real request for the same context takes its slot over (it is
    then finished with what it had encoded). It is always encoding until it is done, so it
    is never planned."""

    warm = True
    max_steps = 0

    def __init__(self, env: JobEnv | None, ids: torch.Tensor | None, stats: FillStats | None = None):
        super().__init__(env, stats or FillStats())
        self.ids = ids
        if env is not None and ids is not None:
            self.slot = env.claim(ids, self.stats, self)
        self.done = self.slot is None or self.slot.target is None
        if self.done:
            self._release()

    def _encoded(self) -> None:
        self.finish()

    def finish(self, error: Exception | None = None) -> None:
        self.done = True
        self._release()

    def plan(self) -> StepRows:  # pragma: no cover - a warm-up is encoding until done
        raise AssertionError("a warm-up only encodes")

    def apply(self, logits: torch.Tensor) -> int:  # pragma: no cover - see plan
        raise AssertionError("a warm-up only encodes")

    def masked_left(self) -> int:
        return 0

    def progress(self) -> dict:
        n = self.slot.cache.n if self.slot is not None else (len(self.ids) if self.ids is not None else 0)
        return {"phase": "warming", "encoded": n, "context": len(self.ids) if self.ids is not None else 0}

    def result(self) -> FillResult:
        st = self.stats
        st.context_tokens = len(self.ids) if self.ids is not None else 0
        return FillResult([], st, [])
