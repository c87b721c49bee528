"""Cutting request text down to what the context window can hold, before tokenizing it.

Owns the character-level cut of the segments around the holes. The token-level policy
(which tokens survive, SUFFIX_SHARE, PREFIX_CUT_ALIGN) stays in ``layout.fit_context``;
this cut only makes sure the tokenizer never sees much more text than that policy can
keep. Without it one 15 MB fill was tokenized whole on the engine thread (15.7 s while
every other client waited, memory 0.9 -> 1.96 GB; issue 17).

Must not know tokens, tensors or the wire: it is a pure function of strings and a
token count.
"""
from __future__ import annotations

# Characters kept per context token. Code averages 3-4 characters per token, so this keeps
# several times the text the token policy can use; only text made of unusually long
# tokens (long whitespace runs) can lose context to the cut, and then only context, never
# correctness.
MAX_CHARS_PER_TOKEN = 16
# The prefix's cut point moves in steps of this many characters (an absolute offset into
# s0), so while the user types at the hole the kept text, and with it the cached tokens
# of the context, stays the same (the same idea as layout.PREFIX_CUT_ALIGN for tokens).
PREFIX_CHAR_ALIGN = 4096


def char_budget(max_context: int) -> int:
    """Characters kept on each side of the holes for a context of max_context tokens."""
    return max(max_context, 1) * MAX_CHARS_PER_TOKEN


def prefix_cut(length: int, keep: int) -> int:
    """Start offset of the kept tail of a prefix of `length` characters: at least
    length - keep, rounded up to a multiple of PREFIX_CHAR_ALIGN (of keep / 4 for small
    windows), 0 when it all fits."""
    over = length - keep
    if over <= 0:
        return 0
    align = max(1, min(PREFIX_CHAR_ALIGN, keep // 4))  # small windows: keep at least 3/4 of keep
    return min(length, -(-over // align) * align)


def cut_segments(segments: list[str], max_context: int) -> list[str]:
    """The segments s0 .. sn around the holes, cut to what max_context tokens can use.

    s0 (before the first hole) keeps its end, from an aligned offset; sn (after the last
    hole) keeps its start; the middle segments share one budget and keep their head and
    tail. Text that already fits is returned unchanged (the same list).
    """
    keep = char_budget(max_context)
    if sum(len(s) for s in segments) <= keep:
        return segments
    out = list(segments)
    out[0] = out[0][prefix_cut(len(out[0]), keep):]
    if len(out) > 1:
        out[-1] = out[-1][:keep]
    middles = range(1, len(out) - 1)
    if sum(len(out[i]) for i in middles) > keep:
        each = max(keep // len(middles), 2)
        for i in middles:
            s = out[i]
            if len(s) > each:
                out[i] = s[: each - each // 2] + s[len(s) - each // 2:]
    return out
