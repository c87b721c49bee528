"""Decoding holes with a pretrained autoregressive FIM coder (layout "causal"): one job's steps.

Owns the causal layout's request state and its per-step rules:
  * the frame: `<|fim_prefix|> <|fim_suffix|> s1 <|fim_middle|> s0 H1` by default (the
    spm-variant order: the prefix runs into the hole, so typing appends to the cached
    context; `infill_formats.causal_context`), one hole at a time, left to right, earlier
    fills committed into the next hole's prefix;
  * Dream's shift: the output at position p - 1 predicts the token at p, so with every
    position attending causally, committing one token per step is the base model's greedy
    AR decoding token for token ("ar");
  * the cache: the context's keys/values (longest-common-prefix reuse across requests: the
    job's slot of the context store) AND the committed hole tokens': under causal attention a committed
    token's keys/values are final, so a step forwards only the tokens committed since the
    last one plus its drafts, and its cost does not grow with the hole;
  * drafts verified in the same forward (self-speculative decoding, Leviathan et al. 2023
    Alg. 1 with the model as its own drafter): n-grams copied from the context (prompt
    lookup: the tokens after the latest earlier occurrence of the last n committed tokens)
    or else the previous forward's own predictions for the positions ahead (Jacobi
    decoding). "lossless" keeps the longest prefix of drafts that agrees with the model's
    argmax, plus the model's own next token: every token is what "ar" commits.
    "threshold" also keeps a draft the model does not rank first but finds nearly as likely
    (probability >= tau x the top token's; Medusa's typical acceptance, Cai et al. 2024,
    Sec. 2.3.1, in ratio form): fewer forwards, exact only at tau = 1. Keeping a prediction
    made after a wrong draft instead (Fast-dLLM's rule read literally) is not an option:
    that prediction is conditioned on a token that is not in the text, and a confident
    model copies its own garbage (a bigram fake did, in the tests).
  * mask drafts (block diffusion): when the model carries a mask-row adapter
    (`draft_adapter`), a forward also carries a block of k mask tokens after its drafts and
    one beside them (at their positions, seeing only verified tokens); the adapter denoises
    each in parallel into the k tokens after the model's own next token, and the after
    block gives the next forward's drafts when every draft was kept, the beside block when
    none was (otherwise both saw a rejected token and are dropped). The adapter acts on mask rows only
    and mask rows come last, so the verified rows and the cache stay the base's: "lossless"
    still commits exactly the "ar" tokens. "threshold" also commits the block's leading
    predictions whose confidence passes tau at once, unverified (Fast-dLLM's parallel rule,
    Wu et al. 2025): more tokens per forward, exact only where the model was right.
  * token healing (`tokenizer.heal_point`, the engine's `_heals`): a hole whose prefix
    ended inside a word or an operator had that chunk's ids cut off its prompt; its first
    steps commit one constrained token each (no drafts) until the removed text is
    re-created, and its text drops that part, so drafts and the AR-exact claim hold after.

It knows nothing of packing several jobs into one forward (the engine does that) or of
the wire protocol. The engine calls `plan()` then `apply(logits)` once per step (`job.Job`).
"""
from __future__ import annotations

import math

import torch

from diffusion_core.network.model import Segment
from diffusion_core.tokens import infill_formats
from diffusion_core.tokens.layout import attention_mask, fit_context
from diffusion_core.tokens.tokenizer import Heal
from .fill_types import FillResult, FillStats, HoleSpec
from .job import JobBase, JobEnv, StepRows
from .params import FillParams
from .sampler import restrict, sample_tokens, step_cap, stop_point

# Drafts per forward. Verifying them is cheap where a forward is bound by reading the weights
# (a GPU); on a CPU extra rows are not free, which is why "auto" is "ar" there
# (Engine.auto_strategy; docs/benchmarks.md, "Where a decode step's time goes"). Not swept.
DRAFT_TOKENS = 8
CACHE_ROOM = 16  # slots past a step's rows its cache reserves
# Prompt lookup tries the longest n-gram first: a longer match is a better predictor.
NGRAM_MAX = 3


def prompt_lookup(tokens: list[int], n_max: int = NGRAM_MAX, k: int = DRAFT_TOKENS) -> list[int]:
    """Up to k tokens following the latest earlier occurrence of the last n tokens (n = n_max..1)."""
    L = len(tokens)
    for n in range(min(n_max, L - 1), 0, -1):
        tail = tokens[L - n:]
        first = tail[0]
        for i in range(L - n - 1, -1, -1):
            if tokens[i] == first and tokens[i : i + n] == tail:
                return tokens[i + n : i + n + k]
    return []


def accepted(drafts: list[int], y: list[int], near: list[bool], params: FillParams, forced: int = 0) -> int:
    """How many drafts to keep; the step commits drafts[:n] and then the model's y[n].

    y[i] was predicted with drafts[:i] in place, so when the kept drafts are exactly y's
    own tokens every committed token is the AR one. near[i]: the model finds drafts[i]
    nearly as likely as y[i] ("threshold"); forced: a schedule's minimum ("topk").
    """
    n = 0
    if params.strategy == "ar":
        return 0
    for i, d in enumerate(drafts):
        if d == y[i] or (params.strategy == "threshold" and near[i]) or n + 1 < forced:
            n += 1
        else:
            break
    return n


class CausalJob(JobBase):
    """One request on the causal layout: its holes, filled one after another."""

    def __init__(self, env: JobEnv, seg_ids: list[list[int]], specs: list[HoleSpec], params: FillParams,
                 mode: str, cancel, on_step, stats: FillStats, room: int, heals: list[Heal | None] | None = None):
        super().__init__(env, stats)
        self.seg_ids, self.specs, self.params, self.mode = seg_ids, specs, params, mode
        self.cancel, self.on_step, self.room = cancel, on_step, room
        self.gen = torch.Generator().manual_seed(params.seed)
        self.fills: list[list[int]] = []  # committed ids of the finished holes
        self.cuts: list[int | None] = []  # where each finished hole's text ends under its stop rule
        # Token healing per hole (engine._heals): the segment before it already lost the
        # removed ids; the hole's first tokens must re-create their text, then drop it.
        self.heals = heals or [None] * len(specs)
        self.max_steps = step_cap([s.budget + (h.removed if h else 0) for s, h in zip(specs, self.heals)])
        self.ctx: list[int] = []  # the current hole's context ids (its frame, prefix and suffix)
        self.committed: list[int] = []  # the current hole's committed ids
        self.cache = None
        self._sp = env.tokenizer.special
        self._start_hole()

    # -- holes -------------------------------------------------------------------------

    def _start_hole(self) -> None:
        """Lay out the next unfinished hole and encode (or reuse) its context."""
        while len(self.fills) < len(self.specs) and self.specs[len(self.fills)].budget == 0:
            self.fills.append([])
            self.cuts.append(None)
        i = len(self.fills)
        if i == len(self.specs):
            self.finish()
            return
        prefix = [t for j in range(i) for t in self.seg_ids[j] + self.fills[j]] + self.seg_ids[i]
        suffix = [t for s in self.seg_ids[i + 1:] for t in s]
        (prefix, suffix), cut = fit_context([prefix, suffix], self.room - self.specs[i].budget)
        self.stats.truncated_tokens += cut
        self.ctx = infill_formats.causal_context(prefix, suffix, self._sp)
        self.stats.context_tokens += len(self.ctx)
        self.budget, self.committed, self.guess, self.mask_guess = self.specs[i].budget, [], [], []
        heal = self.heals[i]
        self.budget += heal.removed if heal else 0
        # The removed text's bytes the committed tokens have yet to re-create: until then a
        # step forwards no drafts and its one token is constrained (heal_candidates).
        self.pending = heal.text.encode("utf-8") if heal else b""
        if self.mode == "exact":
            # The last context token stays out of the cache: its output predicts the hole's
            # first token, so the first step forwards it. The job's first steps encode the
            # rest, one chunk each (encode_step), before its first decode step.
            self.slot = self.env.claim(torch.tensor(self.ctx[:-1], dtype=torch.long), self.stats, self)
            self.cache = self.slot.cache
        else:
            self.cache = self.env.new_cache(len(self.ctx) + self.budget + DRAFT_TOKENS + CACHE_ROOM)

    def _release(self, tokens: list[int] | None = None) -> None:
        """Give the slot back holding what its cache now holds: the context and the
        committed tokens (a part of the context when the job ends while encoding)."""
        super()._release(self.ctx + self.committed)

    def progress(self) -> dict:
        """What a heartbeat says about this job (read from another thread: plain ints)."""
        cache = self.cache
        encoding = self.encoding
        return {"phase": "encoding" if encoding else "decoding",
                "encoded": cache.n if encoding and cache is not None else len(self.ctx),
                "context": len(self.ctx), "steps": self.steps, "tokens": self.stats.tokens_committed,
                "hole": len(self.fills), "holes": len(self.specs)}

    def _end_hole(self, cut: int | None) -> None:
        self.fills.append(self.committed)
        self.cuts.append(cut)
        self._release()
        self._start_hole()

    def finish(self, error: Exception | None = None) -> None:
        self._release()
        self.done, self.error = True, error

    # -- steps -------------------------------------------------------------------------

    def plan(self) -> StepRows:
        """This job's next forward: the tokens committed since the last, its drafts and
        the drafter's mask blocks; the rows from the last committed token's on."""
        tokens = self.ctx + self.committed
        if self.mode == "none":
            self.cache.truncate(0)  # the uncached reference: everything, every step
        n = self.cache.n
        pending = tokens[n:]
        assert pending, "a causal step always forwards the last committed token"
        room = self.budget - len(self.committed) - 1  # a draft's output would predict past the budget
        drafter = (self.env.drafter if self.params.drafts == "auto" and self.params.strategy != "ar"
                   and not self.pending else None)
        drafts = self._drafts(tokens, room, with_drafter=drafter is not None)
        # Two mask blocks: "after" the drafts (the next drafts when every draft is kept) and,
        # when there are drafts, "beside" them -- at the drafts' own positions, seeing only the
        # verified tokens -- the next drafts when the first draft fails, the commonest miss.
        # No more rows than can land inside the budget.
        k = min(drafter.spec.draft_len, self.env.mask_rows) if drafter is not None else 0
        after = max(0, min(k, room - len(drafts)))
        beside = max(0, min(k, room)) if drafts else 0
        p, m = len(pending), len(drafts)
        ids = pending + drafts + [drafter.spec.mask_id] * (beside + after) if k else pending + drafts
        T = len(ids)
        self.cache.reserve(n + T + CACHE_ROOM)
        mask, pos = self._attention(n, p, m, beside, after)
        seg = Segment(0, T, self.cache, "append", mask)
        self._step = (n, p, drafts, beside, after)
        return StepRows(torch.tensor(ids, dtype=torch.long), pos, seg, torch.arange(p - 1, T))

    def _drafts(self, tokens: list[int], room: int, with_drafter: bool) -> list[int]:
        """The tokens this step verifies after the pending ones (none for "ar", while
        healing, or when no draft's output would land inside the budget)."""
        if self.params.strategy == "ar" or room <= 0 or self.pending:
            return []
        k = min(DRAFT_TOKENS, room)
        # With a drafter, no Jacobi guesses: they are mostly wrong, and a rejected draft
        # also voids the mask block behind it; a forward without drafts always yields one.
        return self.mask_guess[:k] or prompt_lookup(tokens, NGRAM_MAX, k) or ([] if with_drafter else self.guess[:k])

    def _attention(self, n: int, p: int, m: int, beside: int, after: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask [T, n + T] over the cache slots, in row order, and positions [T] of a step's
        p pending tokens, m drafts and its mask blocks (n tokens already cached)."""
        T = p + m + beside + after
        mask = attention_mask("causal", 0, n, T, n + T, self.env.device)
        pos = torch.arange(n, n + T)
        if beside:
            rows = slice(p + m, p + m + beside)
            mask[rows, n + p : n + p + m] = False  # the beside block never sees the drafts
            mask[p + m + beside:, n + p + m : n + p + m + beside] = False  # nor the after block it
            pos[rows] = torch.arange(n + p, n + p + beside)
            pos[p + m + beside:] = torch.arange(n + p + m, n + p + m + after)
        return mask, pos

    def apply(self, logits: torch.Tensor) -> int:
        """Commit this step's tokens from logits [len(drafts) + 1 + masks, V]; returns how many."""
        n, n_pending, drafts, beside, after = self._step
        env = self.env
        if self.pending:  # token healing: one row, constrained to re-create the removed text
            logits = restrict(logits, env.tokenizer.heal_candidates(self.pending))
        y, conf = sample_tokens(logits, self.params, self.gen, env.banned)
        y, conf = y.tolist(), conf.tolist()
        v = len(drafts) + 1  # the verifying rows come first, then the beside block, then the after block
        blocks = {"beside": (y[v : v + beside], conf[v : v + beside]), "after": (y[v + beside:], conf[v + beside:])}
        y = y[:v]
        near = self._near(logits[: len(drafts)], drafts, y) if self.params.strategy == "threshold" and drafts else []
        keep = accepted(drafts, y, near, self.params, self._forced())
        new, over, cut = self._commit(drafts[:keep] + [y[keep]])
        # Keys/values written for drafts that became the committed tokens stay; the rest go.
        matched = 0
        while matched < min(len(drafts), len(new)) and drafts[matched] == new[matched]:
            matched += 1
        self.cache.truncate(n + n_pending + matched)
        self.guess = y[keep + 1:]
        # A mask block continues the text only if the tokens it saw are the ones kept: the
        # after block when every draft stayed, the beside block when none did.
        self.mask_guess = []
        block = "after" if keep == len(drafts) else "beside" if keep == 0 else None
        if block is not None and not over:
            more, over, cut = self._take_block(*blocks[block])
            new += more
        self.steps += 1
        self.stats.tokens_committed += len(new)
        if over:
            self._end_hole(cut)
        return len(new)

    def _near(self, logits: torch.Tensor, drafts: list[int], y: list[int]) -> list[bool]:
        """Per draft, whether the model finds it nearly as likely as its own token y[i]
        ("threshold": probability >= tau x the top token's, from logits [len(drafts), V])."""
        logp = torch.log_softmax(logits.float(), dim=-1)
        rows = torch.arange(len(drafts))
        ratio = torch.exp(logp[rows, torch.tensor(drafts)] - logp[rows, torch.tensor(y[: len(drafts)])])
        # A draft copied from the context may be a FIM marker: never keep a banned id.
        return [bool(r >= self.params.threshold) and t not in self.env.banned for r, t in zip(ratio.tolist(), drafts)]

    def _forced(self) -> int:
        """Under "topk", the tokens this step must commit for the hole to end within its steps."""
        if self.params.strategy != "topk" or self.params.steps <= 0:
            return 0
        left = self.budget - len(self.committed)
        return math.ceil(left / max(1, self.params.steps - self.steps))

    def _take_block(self, mask_y: list[int], mask_conf: list[float]) -> tuple[list[int], bool, int | None]:
        """The denoised mask block that saw exactly the kept tokens: up to an end token it
        becomes the next drafts; "threshold" commits its confident lead now (`_commit`'s result)."""
        for t in mask_y:
            if t in self.env.end_ids:
                break
            self.mask_guess.append(t)
        if self.params.strategy != "threshold" or not self.mask_guess:
            return [], False, None
        # Fast-dLLM's parallel rule on the denoised block: its leading predictions the
        # model is confident of (>= tau) are committed now, unverified, beside the AR
        # token they were decoded with; the rest stay drafts for the next forward.
        sure = 0
        while sure < len(self.mask_guess) and mask_conf[sure] >= self.params.threshold:
            sure += 1
        if not sure:
            return [], False, None
        more, over, cut = self._commit(self.mask_guess[:sure])
        self.mask_guess = [] if over else self.mask_guess[sure:]
        return more, over, cut

    def _commit(self, tokens: list[int]) -> tuple[list[int], bool, int | None]:
        """Append tokens to the hole until an end token, its stop rule or its budget:
        (the tokens appended, whether the hole is over, where its text is cut)."""
        env, spec = self.env, self.specs[len(self.fills)]
        new, cut = [], None
        for t in tokens:
            if t in env.end_ids:
                return new, True, None
            new.append(t)
            self.committed.append(t)
            if self.pending:
                b = env.tokenizer.token_bytes(t) or b""
                self.pending = self.pending[len(b):] if self.pending.startswith(b) else b""
            text = env.tokenizer.decode_healed(self.committed, self.heals[len(self.fills)])
            cut = stop_point(text, spec.max_lines, spec.dedent_below, spec.min_depth)
            if cut is not None or len(self.committed) >= self.budget:
                return new, True, cut
        return new, False, cut

    def masked_left(self) -> int:
        return 0 if self.done else self.budget - len(self.committed)

    def result(self) -> FillResult:
        st = self._final_stats()
        tok = self.env.tokenizer
        texts = [tok.decode_healed(ids, heal)[:cut] for ids, cut, heal in zip(self.fills, self.cuts, self.heals)]
        return FillResult(texts, st, [list(f) for f in self.fills])
