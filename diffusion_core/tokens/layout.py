"""Token layouts of an infill request and the attention masks that go with them: the one place both live.

Three layouts:

* "diffill" (our own model, exact cache). A causal context, then a bidirectional hole region:

      [BOS] <suf> s1 <hole> s2 ... <hole> sn <pre> s0 | <mid> H1 <mid> H2 ... <mid> Hn

  Context tokens attend causally to earlier context tokens only; hole-region tokens attend
  to the whole context and the whole region. The context's keys/values therefore never
  depend on the holes, and typing at the first hole only appends to s0 at the end of the
  context, so the next request encodes just the new tokens.

* "natural" (fully bidirectional checkpoints such as Dream or LLaDA): the text in reading
  order with each hole as mask tokens, every token attending to every token.

* "causal" (a pretrained autoregressive FIM coder): `<|fim_prefix|> <|fim_suffix|> s1
  <|fim_middle|> s0 H1` by default (infill_formats.causal_context), every token attending to the tokens
  at or before it. A mask is never attended by an earlier position, and a committed hole
  token's keys/values are final, so the cache holds the context and the committed tokens.

It also owns the truncation policy for contexts longer than the model allows.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .tokenizer import SpecialIds

# The left cut of s0 moves in steps of this many tokens, so that a prefix window that
# slides while the user types still shares its cached tokens with the previous request.
PREFIX_CUT_ALIGN = 256
# Share of the context budget the suffix keeps when both sides are too long: the code
# before the cursor predicts the hole better than the code after it.
SUFFIX_SHARE = 0.25


@dataclass
class Layout:
    ids: list[int]  # the whole sequence, holes initialised to the mask id
    n_context: int  # "diffill": the first n_context ids are the causal context; "natural": 0
    holes: list[tuple[int, int]]  # absolute [start, end) of each hole's mask tokens
    kind: str  # "diffill" | "natural" | "causal"
    truncated: int = 0  # context tokens dropped by the truncation policy


def fit_context(seg_ids: list[list[int]], max_context: int) -> tuple[list[list[int]], int]:
    """Truncate the segments around the holes to at most max_context tokens in all.

    Policy: keep the tokens nearest the holes. s0 loses tokens from its start (cut at a
    multiple of PREFIX_CUT_ALIGN so the cache survives typing) and sn from its end; the
    suffix keeps at most SUFFIX_SHARE of the budget when the prefix needs the rest. Middle
    segments (between two holes) lose their own middles only if still too long.
    """
    total = sum(len(s) for s in seg_ids)
    if total <= max_context:
        return seg_ids, 0
    segs = [list(s) for s in seg_ids]
    middle = sum(len(s) for s in segs[1:-1])
    room = max(max_context - middle, 0)
    first, last = segs[0], segs[-1] if len(segs) > 1 else []
    keep_last = min(len(last), max(int(room * SUFFIX_SHARE), room - len(first)))
    keep_first = min(len(first), room - keep_last)
    cut = len(first) - keep_first
    cut = min(len(first), -(-cut // PREFIX_CUT_ALIGN) * PREFIX_CUT_ALIGN) if cut else 0
    segs[0] = first[cut:]
    if len(segs) > 1:
        segs[-1] = last[:keep_last]
    over = sum(len(s) for s in segs) - max_context
    for i in range(1, len(segs) - 1):
        if over <= 0:
            break
        s = segs[i]
        drop = min(over, len(s))
        keep = len(s) - drop
        segs[i] = s[: keep - keep // 2] + s[len(s) - keep // 2:] if keep else []
        over -= drop
    return segs, total - sum(len(s) for s in segs)


def build_diffill(seg_ids: list[list[int]], budgets: list[int], sp: SpecialIds) -> Layout:
    """Our own layout (see module docstring)."""
    assert len(seg_ids) == len(budgets) + 1
    ctx: list[int] = [sp.bos] if sp.bos is not None else []
    ctx.append(sp.suf)
    for i, s in enumerate(seg_ids[1:]):
        if i:
            ctx.append(sp.hole)
        ctx.extend(s)
    ctx.append(sp.pre)
    ctx.extend(seg_ids[0])
    ids = list(ctx)
    holes = []
    for b in budgets:
        ids.append(sp.mid)
        holes.append((len(ids), len(ids) + b))
        ids.extend([sp.mask] * b)
    return Layout(ids, len(ctx), holes, "diffill")


def build_natural_framed(seg_ids: list[list[int]], budgets: list[int], sp: SpecialIds,
                         bos: bool, eos: bool) -> Layout:
    """Reading order inside a checkpoint family's frame: [BOS]? s0 H1 s1 ... Hn sn [EOS]?

    Dream's published infill prompt is BOS prefix masks suffix EOS (the EOS says the text
    ends there); `infill_formats` decides per family which ends apply.
    """
    ids: list[int] = [sp.bos] if bos and sp.bos is not None else []
    holes = []
    for i, s in enumerate(seg_ids):
        ids.extend(s)
        if i < len(budgets):
            holes.append((len(ids), len(ids) + budgets[i]))
            ids.extend([sp.mask] * budgets[i])
    if eos:
        ids.append(sp.eos)
    return Layout(ids, 0, holes, "natural")


def attention_mask(kind: str, n_context: int, q_start: int, q_len: int, k_len: int,
                   device: torch.device | str = "cpu") -> torch.Tensor | None:
    """Bool [q_len, k_len] mask (True = may attend) for queries at absolute positions
    [q_start, q_start + q_len) over keys [0, k_len); None when every key is visible.

    "diffill": a context query i sees context keys j <= i; a hole-region query sees all.
    "natural": everything sees everything. "causal": query i sees keys j <= i.
    """
    if kind == "causal":
        q = torch.arange(q_start, q_start + q_len, device=device)[:, None]
        return torch.arange(k_len, device=device)[None, :] <= q
    if kind == "natural" or q_start >= n_context:
        return None
    q = torch.arange(q_start, q_start + q_len, device=device)[:, None]
    k = torch.arange(k_len, device=device)[None, :]
    in_region = q >= n_context
    return (k <= q) & (k < n_context) | in_region


def full_mask(kind: str, n_context: int, T: int, device: torch.device | str = "cpu") -> torch.Tensor | None:
    """[T, T] mask of a whole sequence (training and the uncached reference)."""
    return attention_mask(kind, n_context, 0, T, T, device)


def logit_source(positions: torch.Tensor, shift: bool) -> torch.Tensor:
    """Rows whose outputs predict the tokens at `positions` (Dream-style shift: the row before)."""
    return positions - 1 if shift else positions
