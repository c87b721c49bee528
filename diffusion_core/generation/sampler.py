"""Which masked positions to commit at each denoising step.

Owns the sampling rules, independent of caching and batching:
  * LLaDA low-confidence remasking ("topk"): per step, commit the k most confident masked
    positions of the current block, k from an even schedule over the block's steps
    (Nie et al. 2025, Alg. 2 / `generate.py`).
  * Fast-dLLM threshold parallel decoding ("threshold"): commit every masked position of
    the current block whose confidence is >= tau, and at least the most confident one
    (Wu et al. 2025, Sec. 3.2).
  * Semi-autoregressive blocks of `block_size` inside each hole; holes advance together.
  * Variable length: once a hole commits an end token, the positions after it become end
    tokens too (the hole is over), and the trimmed text stops there.
  * DreamOn variable length (Wu et al. 2025) for checkpoints trained with it: a hole starts
    short; a committed `<|expand|>` becomes two masks and a committed end token is deleted,
    so the hole grows or shrinks, never past its budget (`resize_holes`).

  * Stop rules (`stop_point`): a hole also ends once its committed text has as many lines
    as the planner asked for, or a later line dedents below the hole's indent. A pretrained
    AR coder rarely emits an end token after a FIM middle (the registry copy of
    Qwen2.5-Coder ran to a 40-token cap on 26 of 26 single-line holes), so without these
    every fill would run to its budget.
  * A step cap (`step_cap`): every loop ends, whatever the logits do.

The obviously-correct loop the engine's fast path is tested against (a full uncached
forward every step, plain Python per hole) is `tests/checkpoints/reference_sampler.py`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .params import FillParams

# Steps a loop may take beyond what its budgets need: every step of every strategy commits
# at least one token per unfinished hole, so budget + margin is only ever hit by a bug.
STEP_CAP_MARGIN = 8


@dataclass
class HoleState:
    """Denoising progress of one hole: positions [start, end) of the sequence."""

    start: int
    end: int
    block_size: int
    steps_in_block: int = 0  # steps spent on the current block (LLaDA schedule)
    budget: int = 0  # DreamOn holes: the most positions the hole may grow to (0: fixed length)
    expansions: int = 0  # DreamOn holes: expand tokens committed so far

    def may_expand(self) -> bool:
        # Expansions are capped at the budget too: otherwise expand-then-delete could cycle
        # forever. With the cap every hole finishes within initial masks + 2 * budget steps.
        return self.end - self.start < self.budget and self.expansions < self.budget

    def current_block(self, masked: torch.Tensor) -> tuple[int, int] | None:
        """[lo, hi) of the first block that still has masked positions, or None when done."""
        idx = torch.nonzero(masked[self.start : self.end]).flatten()
        if idx.numel() == 0:
            return None
        b = int(idx[0]) // self.block_size
        lo = self.start + b * self.block_size
        return lo, min(lo + self.block_size, self.end)


def sample_tokens(logits: torch.Tensor, params: FillParams, gen: torch.Generator | None,
                  banned: tuple[int, ...] = ()) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [M, V] -> (tokens [M], confidence [M]) under the request's temperature, top-p and confidence rule.

    banned: ids that are not text (mask, layout markers): never sampled.
    """
    logits = logits.float()
    if banned:
        logits = logits.clone()
        logits[:, list(banned)] = float("-inf")
    if params.temperature > 0:
        logits = logits / params.temperature
    probs = torch.softmax(logits, dim=-1)
    if params.temperature > 0:
        p = probs
        if params.top_p < 1.0:
            sorted_p, order = torch.sort(probs, dim=-1, descending=True)
            # Keep the smallest set whose mass reaches top_p (the first token always stays).
            drop = sorted_p.cumsum(-1) - sorted_p >= params.top_p
            sorted_p = sorted_p.masked_fill(drop, 0.0)
            p = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
        tokens = torch.multinomial(p, 1, generator=gen).squeeze(-1)
    else:
        tokens = probs.argmax(-1)
    if params.confidence == "prob":
        conf = probs.gather(-1, tokens[:, None]).squeeze(-1)
    elif params.confidence == "margin":
        top2 = probs.topk(2, dim=-1).values
        conf = top2[:, 0] - top2[:, 1]
    else:  # entropy, mapped to (0, 1] so one threshold scale fits all three rules
        conf = torch.exp((probs * torch.log(probs.clamp_min(1e-12))).sum(-1))
    return tokens, conf


def restrict(logits: torch.Tensor, allowed: list[int]) -> torch.Tensor:
    """logits [M, V] with every id outside `allowed` at -inf: token healing's constraint on a
    hole's first token(s) (`tokenizer.heal_candidates`), applied before `sample_tokens`."""
    idx = torch.tensor(allowed, dtype=torch.long)
    out = torch.full_like(logits, float("-inf"))
    out[:, idx] = logits[:, idx]
    return out


def num_to_commit(n_masked: int, hole: HoleState, block_len: int, budget: int, params: FillParams) -> int:
    """LLaDA's schedule: the block's share of `steps`, spread evenly over what is left of it."""
    if params.steps <= 0:
        total_steps = block_len  # one token per step
    else:
        total_steps = max(1, round(params.steps * block_len / budget))
    steps_left = max(1, total_steps - hole.steps_in_block)
    return max(1, math.ceil(n_masked / steps_left))


def choose(conf: torch.Tensor, k: int, params: FillParams) -> torch.Tensor:
    """Indices into conf [M] of the positions to commit this step (never empty for M > 0)."""
    order = torch.argsort(conf, descending=True, stable=True)
    if params.strategy == "topk":
        return order[: min(k, conf.numel())]
    n = int((conf >= params.threshold).sum())
    if params.steps > 0:
        n = max(n, k)  # a step cap forces the schedule's minimum
    return order[: max(1, min(n, conf.numel()))]


def commit_hole(x: torch.Tensor, hole: HoleState, block: tuple[int, int], positions: list[int],
                logits: torch.Tensor, params: FillParams, gen: torch.Generator | None, end_ids: tuple[int, ...],
                banned: tuple[int, ...] = (), expand_id: int | None = None) -> int:
    """One step for one hole: commit some of its masked `positions` (all in `block`) given
    their logits [len(positions), V]. Returns the number of tokens committed.

    A committed end token ends the hole: the positions after the leftmost one become end
    tokens too, so the hole stops where the model first closed it. DreamOn holes
    (hole.budget > 0, expand_id given) instead keep their end and expand tokens in place for
    `resize_holes`; expand is banned once the hole may not grow.
    """
    variable = hole.budget > 0 and expand_id is not None
    if variable and not hole.may_expand():
        banned = tuple(banned) + (expand_id,)
    tokens, conf = sample_tokens(logits, params, gen, banned)
    k = num_to_commit(len(positions), hole, block[1] - block[0], hole.end - hole.start, params)
    chosen = choose(conf, k, params).tolist()
    for j in chosen:
        x[positions[j]] = tokens[j]
    hole.steps_in_block += 1
    if variable:
        hole.expansions += sum(int(tokens[j]) == expand_id for j in chosen)
        return len(chosen)
    for p in sorted(positions[j] for j in chosen):
        if int(x[p]) in end_ids:
            x[p + 1 : hole.end] = int(x[p])
            break
    return len(chosen)


def resize_holes(x: torch.Tensor, holes: list[HoleState], mask_id: int, expand_id: int,
                 end_ids: tuple[int, ...]) -> torch.Tensor:
    """DreamOn's rules after a step: in each hole, committed end tokens are deleted and each
    committed expand token becomes two masks (one when the hole is at its budget). Holes
    after a resized one move with it. Returns the new sequence (x itself when nothing changed)."""
    ids = x.tolist()
    changed = False
    shift = 0
    for h in holes:
        h.start += shift
        h.end += shift
        old = h.end - h.start
        hole = [t for t in ids[h.start : h.end] if t not in end_ids]
        grown: list[int] = []
        room = h.budget - len(hole)
        for t in hole:
            if t == expand_id:
                grow = 1 if room > 0 else 0
                room -= grow
                grown.extend([mask_id] * (1 + grow))
            else:
                grown.append(t)
        if grown != ids[h.start : h.end]:
            changed = True
            ids[h.start : h.end] = grown
            h.end = h.start + len(grown)
            h.steps_in_block = 0
        shift += h.end - h.start - old
    return torch.tensor(ids, dtype=x.dtype) if changed else x


def step_cap(budgets: list[int], variable: bool = False) -> int:
    """The most steps a fill of these holes may take. DreamOn holes may take initial masks
    + 2 * budget steps each (`HoleState.may_expand`); fixed holes one per token at most."""
    per = [3 * b if variable else b for b in budgets]
    return sum(per) + len(budgets) + STEP_CAP_MARGIN


def bracket_stop(text: str, min_depth: int) -> int | None:
    """Index of the first closing bracket that takes text's bracket depth below min_depth
    (it would close the enclosing scope); None when there is none yet or min_depth > 0.

    Quotes are skipped within a line so `")"` does not count; a string that spans lines
    or a bracket in a comment can still miscount, so this only stops decoding early
    and finalize, which knows the language, cuts the fill again.
    """
    if min_depth > 0:
        return None
    depth, quote, escaped = 0, "", False
    for i, ch in enumerate(text):
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote or ch == "\n":
                quote = ""
        elif ch in "\"'`":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth < min_depth:
                return i
    return None


def stop_point(text: str, max_lines: int = 0, dedent_below: int = -1, min_depth: int = 1) -> int | None:
    """The earliest stop of the line rules below (`_line_stop`) and of `bracket_stop`."""
    cuts = [c for c in (_line_stop(text, max_lines, dedent_below), bracket_stop(text, min_depth)) if c is not None]
    return min(cuts) if cuts else None


def _line_stop(text: str, max_lines: int = 0, dedent_below: int = -1) -> int | None:
    """Where a hole's text ends under its stop rule, once the text shows it; None: not yet.

    max_lines > 0: after that many newline-terminated lines with content; the fill ends
    at the end of the last of them (its newline excluded).
    dedent_below >= 0: at the first line after the first whose content starts at a column
    (leading spaces/tabs counted as one each) below dedent_below; the fill ends before
    that line's newline. The first line starts at the cursor, so its indent says nothing.
    """
    if max_lines <= 0 and dedent_below < 0:
        return None
    done, start, first = 0, 0, True
    while True:
        nl = text.find("\n", start)
        line = text[start:] if nl < 0 else text[start:nl]
        content = line.lstrip(" \t")
        if not first and dedent_below >= 0 and content.strip() and len(line) - len(content) < dedent_below:
            return start - 1
        if nl < 0:
            return None
        if content.strip():
            done += 1
            if 0 < max_lines <= done:
                return nl
        start, first = nl + 1, False


def trim(ids: list[int], end_ids: tuple[int, ...]) -> list[int]:
    """Cut a hole's ids at its first end token."""
    for i, t in enumerate(ids):
        if t in end_ids:
            return ids[:i]
    return ids
