"""The training objective: infill examples in the core's layout and the masked-diffusion loss.

Owns how a source file becomes a training example (window, holes, budgets, noise) and the
loss. Holes come from the `grammars` span sampler (statements, blocks, expressions,
argument lists, conditions) mixed with editor-like spans (rest of the line from a random
cursor). Each hole is padded with end tokens, half the time to a budget drawn around its
true length and half the time to the budget an editor would ask for it, so the model learns
to end a hole early even when the hole is many times longer than its text.

Loss (LLaDA, Nie et al. 2025, Eq. 3; MDLM, Sahoo et al. 2024): t ~ U(0, 1), each hole
token masked with probability t, cross-entropy on the masked tokens weighted by 1/t,
normalised by the number of hole tokens. Because our context is causal and logits are
shifted (output i predicts token i+1), the context also gets a next-token loss for free;
`ar_weight` scales it.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from grammars.budgets import BLOCK_BUDGET, BODY_BUDGET, LINE_BUDGET

from diffusion_core.tokens.layout import build_diffill, fit_context
from diffusion_core.tokens.tokenizer import SpecialIds

try:  # grammars is part of the distribution; the fallback keeps training alive on junk input
    from grammars.spans import sample_spans
except ImportError:  # pragma: no cover
    sample_spans = None

MIN_T = 1e-3  # t is drawn from [MIN_T, 1): 1/t stays bounded
# The largest hole of a training example (its target is cut there); not the inference cap,
# which is protocol.MAX_HOLE_TOKENS.
MAX_TRAIN_HOLE_TOKENS = 128
# Hole sizes an editor asks for: the planner's line, block and body budgets, and the LSP's
# default cap of 64 tokens on a block. At inference a 3-token rest of line still gets a
# 32-token hole; a model that only ever saw holes of at most about twice their text reads
# such a hole's size as evidence of a long fill and fills it to the end.
EDITOR_BUDGETS = (LINE_BUDGET, 2 * LINE_BUDGET, BLOCK_BUDGET, BODY_BUDGET)
EDITOR_BUDGET_SHARE = 0.5  # holes padded to an editor budget; the rest to one near their length


@dataclass
class Example:
    ids: list[int]  # clean sequence (holes hold their target tokens, padded with end tokens)
    n_context: int
    holes: list[tuple[int, int]]


def editor_span(text: str, rng: random.Random) -> tuple[int, int]:
    """A cursor somewhere in a line, filling the rest of that line (or a few lines)."""
    starts = [0] + [i + 1 for i, c in enumerate(text) if c == "\n"]
    line = rng.randrange(len(starts))
    lo = starts[line]
    hi = text.find("\n", lo)
    hi = len(text) if hi < 0 else hi
    body = len(text[lo:hi]) - len(text[lo:hi].lstrip())
    start = lo + body + (rng.randrange(hi - lo - body) if hi - lo - body > 0 else 0)
    if rng.random() < 0.25:  # a few more lines: a multi-line completion
        for _ in range(rng.randint(1, 4)):
            nxt = text.find("\n", hi + 1)
            hi = len(text) if nxt < 0 else nxt
    return start, hi


def choose_spans(text: str, lang: str, rng: random.Random, max_holes: int) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    if sample_spans is not None and rng.random() < 0.6:
        spans = [(s.start, s.end) for s in sample_spans(text, lang, rng, max_holes)]
    if not spans:
        spans = [editor_span(text, rng) for _ in range(rng.randint(1, max_holes))]
    spans.sort()
    out: list[tuple[int, int]] = []
    for s, e in spans:  # non-overlapping, non-empty
        if e > s and (not out or s >= out[-1][1]):
            out.append((s, e))
    return out


def hole_budget(n: int, rng: random.Random) -> int:
    """Mask tokens for a hole of n text tokens: never fewer than n, at most MAX_TRAIN_HOLE_TOKENS
    (unless n itself is more). Half the time the smallest editor budget that holds it, else
    a budget drawn between n and about 2n + 8."""
    if n >= MAX_TRAIN_HOLE_TOKENS:
        return n
    if rng.random() < EDITOR_BUDGET_SHARE:
        return min(MAX_TRAIN_HOLE_TOKENS, next((b for b in EDITOR_BUDGETS if b >= n), MAX_TRAIN_HOLE_TOKENS))
    return min(MAX_TRAIN_HOLE_TOKENS, n + int(rng.random() * (n + 8)))


def make_example(text: str, lang: str, tok, sp: SpecialIds, seq_len: int, rng: random.Random,
                 max_holes: int = 3) -> Example | None:
    """One example from a file, or None when the file gives nothing usable."""
    window = seq_len * 4  # ~3.6 characters per token: a window that fills the sequence
    if len(text) > window:
        lo = rng.randrange(len(text) - window)
        lo = text.find("\n", lo) + 1 or lo
        text = text[lo : lo + window]
    spans = choose_spans(text, lang, rng, max_holes)
    if not spans:
        return None
    segments, holes_text, last = [], [], 0
    for s, e in spans:
        segments.append(text[last:s])
        holes_text.append(text[s:e])
        last = e
    segments.append(text[last:])
    enc = tok.encode_batch(segments + holes_text)
    seg_ids, hole_ids = enc[: len(segments)], enc[len(segments):]
    hole_ids = [h[:MAX_TRAIN_HOLE_TOKENS] for h in hole_ids]
    budgets = [hole_budget(len(h), rng) for h in hole_ids]
    region = sum(budgets) + len(budgets)
    room = seq_len - region - 3
    if room < 16:
        return None
    seg_ids, _ = fit_context(seg_ids, room)
    layout = build_diffill(seg_ids, budgets, sp)
    ids = list(layout.ids)
    for (s, e), h in zip(layout.holes, hole_ids):
        ids[s:e] = h + [sp.eos] * (e - s - len(h))
    return Example(ids, layout.n_context, layout.holes)


def make_causal_example(text: str, tok, sp: SpecialIds, seq_len: int, rng: random.Random) -> Example | None:
    """A plain window of a file as a causal-LM example: [BOS] tokens, all context, no holes.

    The trainer's first phase (`causal_frac`) uses these: the same weights learn the language
    several times faster from next-token loss on every position than from the mixed
    objective, and the diffusion phase then adapts them to infilling (the AR-to-diffusion
    recipe of Dream and DiffuCoder, which start from Qwen2.5 weights).
    """
    window = seq_len * 4
    if len(text) > window:
        lo = rng.randrange(len(text) - window)
        lo = text.find("\n", lo) + 1 or lo
        text = text[lo : lo + window]
    ids = [sp.bos] + tok.encode(text)[: seq_len - 1]
    if len(ids) < 16:
        return None
    return Example(ids, len(ids), [])


def collate(examples: list[Example], sp: SpecialIds, rng: torch.Generator, ar_weight: float):
    """Noised batch: (input ids [B, T], positions [B, T], mask [B, 1, T, T], targets [B, T], weights [B, T]).

    targets/weights are aligned with the logits rows (shifted: row i predicts token i+1).
    """
    B, T = len(examples), max(len(e.ids) for e in examples)
    pad = sp.pad if sp.pad is not None else sp.eos
    x = torch.full((B, T), pad, dtype=torch.long)
    clean = torch.full((B, T), pad, dtype=torch.long)
    weight_at = torch.zeros(B, T)  # loss weight of predicting the token at each position
    # Low-discrepancy t (MDLM, Sahoo et al. 2024, Sec. 3.5): one uniform offset, the batch's
    # t spread evenly over [0, 1). Each t is still U(0, 1), so the loss stays unbiased, but a
    # batch never draws all-small or all-large t: the 1/t-weighted loss varies far less per step.
    t = (torch.rand(1, generator=rng) + torch.arange(B) / B) % 1.0 * (1 - MIN_T) + MIN_T
    for b, ex in enumerate(examples):
        n = len(ex.ids)
        ids = torch.tensor(ex.ids)
        clean[b, :n] = ids
        x[b, :n] = ids
        n_hole = sum(e - s for s, e in ex.holes)
        for s, e in ex.holes:
            noisy = torch.rand(e - s, generator=rng) < t[b]
            x[b, s:e] = torch.where(noisy, torch.tensor(sp.mask), ids[s:e])
            weight_at[b, s:e] = noisy.float() / (t[b] * n_hole)
        if ar_weight > 0 and ex.n_context > 1:
            weight_at[b, 1 : ex.n_context] = ar_weight / (ex.n_context - 1)
    mask = batch_mask(torch.tensor([e.n_context for e in examples]), torch.tensor([len(e.ids) for e in examples]), T)
    pos = torch.arange(T).expand(B, T)
    # Shift: logits row i predicts token i+1.
    targets = clean[:, 1:]
    weights = weight_at[:, 1:]
    return x, pos, mask, targets, weights


def batch_mask(n_context: torch.Tensor, n: torch.Tensor, T: int) -> torch.Tensor:
    """[B, 1, T, T] diffill masks of a padded batch (the same rule as layout.attention_mask,
    vectorised over examples; a test checks they agree). Padding keys are invisible;
    padding rows see key 0 so SDPA yields no NaN."""
    q = torch.arange(T)[None, :, None]
    k = torch.arange(T)[None, None, :]
    nc, nn_ = n_context[:, None, None], n[:, None, None]
    valid = (k < nn_) & (q < nn_) & (((k <= q) & (q < nc)) | (q >= nc))
    pad_row = (q >= nn_) & (k == 0)
    return (valid | pad_row)[:, None]


def loss_fn(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """logits [B, T, V] (rows 0..T-2 used), targets/weights [B, T-1] -> mean weighted CE per example."""
    ce = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(), reduction="none")
    return (ce * weights.flatten()).sum() / logits.shape[0]
