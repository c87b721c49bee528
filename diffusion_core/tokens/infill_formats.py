"""Each foreign checkpoint family's published infill layout and token rules, for the engine to apply.

Owns what differs between families once their weights are loaded (see `checkpoints`):
  * the frame around the text: Dream, Dream-Coder, DiffuCoder and DreamOn were shown infill
    prompts as `<|beginoftext|> prefix <|mask|>*n suffix <|endoftext|>` (DreamOn README's
    `process_infilling_prompt`); Open-dCoder's infill evaluation uses `prefix masks suffix`
    with no BOS or EOS; LLaDA starts with `<|startoftext|>` and pads on the right with EOS.
    The EOS after the suffix says "the file ends here", so it is left out when the
    truncation policy cut the suffix short.
  * which tokens end a hole (eos and pad, plus a chat model's end-of-turn token),
  * which tokens must never be committed into a hole (mask, bos, DreamOn's expand outside
    DreamOn's expansion rule),
  * DreamOn's variable length (Wu et al. 2025, "DreamOn"): holes start short
    (`DREAMON_INITIAL_MASKS`); the grow / shrink rule itself is the sampler's `resize_holes`.
  * the "causal" format of a pretrained autoregressive FIM coder (Qwen2.5-Coder): its
    published prefix-suffix-middle order `<|fim_prefix|> s0 <|fim_suffix|> s1 <|fim_middle|>
    H1` (12 of 26 single-line problems of a public infilling benchmark passed in this order,
    4 of 26 in suffix-prefix-middle order) or a suffix-first one (`FIM_ORDERS`, below). A
    frame has room for one middle, so several holes are filled one after another, left to
    right, each with the earlier fills committed into its prefix and the later holes left
    empty in its suffix (`causal_context`): a later hole then sees what the earlier ones
    became, which a joint fill of a function body needs, and no hole is asked to predict
    text it cannot see. With the suffix first (DEFAULT_FIM_ORDER is such an order), a
    keystroke (the prefix grows at its end) only appends to the cached context instead of
    re-encoding the suffix window (~50 tokens a keystroke at the 256-byte default). On 64
    held-out holes the base filled as well in "spm-variant" (exact 0.250 vs PSM's 0.266,
    edit similarity 0.582 vs 0.514) and failed in "spm" (no exact fill in 32):
    docs/benchmarks.md, "FIM order".

It knows nothing of caches, batching or the sampler's schedule; the engine calls it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from diffusion_core.errors import CoreError
from diffusion_core.network.config import ModelConfig
from .layout import Layout, build_natural_framed
from .tokenizer import SpecialIds, Tokenizer

# DreamOn starts a hole this short and lets it grow by expansion up to the hole's budget
# (its README starts from 4 masks; more masks at the start cost steps without helping).
DREAMON_INITIAL_MASKS = 4

# The mask placeholder of the "causal" layout (a pretrained AR FIM coder such as Qwen2.5-Coder):
# a real token that is never text, so it can sit in a hole's unfilled positions. Under causal
# attention no earlier position ever attends to it, so its embedding never changes an output;
# it only has to be an id that can never be committed (it is banned).
CAUSAL_MASK_TOKEN = "<|vision_pad|>"
# Context tokens a causal-layout model keeps around its hole (ModelConfig.max_context). The
# suffix follows the prefix in PSM order, so a keystroke re-encodes everything after it:
# at ~7 ms of fp32 CPU prefill per token of the 0.5B base (docs/benchmarks.md), a longer
# window costs latency.
CAUSAL_MAX_CONTEXT = 2048
# The FIM token strings of Qwen2.5-Coder (its tokenizer_config.json), role -> token: found by
# name in a folder's or GGUF's vocabulary (the base GGUF carries no fim_* ids).
FIM_TOKENS = {"pre": "<|fim_prefix|>", "suf": "<|fim_suffix|>", "mid": "<|fim_middle|>", "pad": "<|fim_pad|>"}
CAUSAL_EOS_TOKEN = "<|endoftext|>"  # Qwen2.5-Coder's end of a FIM middle (and of a file)
FILE_SEP_TOKEN = "<|file_sep|>"  # repository-level FIM: the next file starts, so the hole ended
# The orders a causal hole's context can take (Bavarian et al. 2022, "Efficient Training of
# Language Models to Fill in the Middle", Sec. 3 and App. D):
#   psm          <|fim_prefix|> prefix <|fim_suffix|> suffix <|fim_middle|>   (Qwen2.5-Coder's
#                published FIM format; a keystroke re-encodes the suffix window)
#   spm          <|fim_suffix|> suffix <|fim_prefix|> prefix <|fim_middle|>   (llama.cpp's
#                --spm-infill; a keystroke re-encodes its new tokens and <|fim_middle|>)
#   spm-variant  <|fim_prefix|> <|fim_suffix|> suffix <|fim_middle|> prefix   (the SPM form
#                StarCoder trained on: the prefix runs straight into the middle, so a keystroke
#                only appends, and a fill the user types along with stays cached too)
FIM_ORDERS = ("psm", "spm", "spm-variant")
# spm-variant by default: on 64 held-out holes it kept the base's quality (exact 0.250 vs psm
# 0.266, edit similarity 0.582 vs 0.514, parses 0.953 vs 0.891) while a keystroke forwards 1-2
# context tokens instead of psm's ~50 (the suffix window), docs/benchmarks.md "FIM order".
DEFAULT_FIM_ORDER = "spm-variant"
FIM_ORDER_ENV = "DIFFILL_FIM_ORDER"  # debugging / benchmark switch: the order when none is passed


@dataclass(frozen=True)
class InfillFormat:
    name: str
    bos: bool  # start with the BOS token
    eos_after_suffix: bool  # end with EOS when the suffix reaches the real end of the text
    stop_tokens: tuple[str, ...] = ()  # more tokens that end a hole (besides eos and pad)
    variable_length: bool = False  # DreamOn: expand / delete rules apply


FORMATS = {
    "dream": InfillFormat("dream", bos=True, eos_after_suffix=True, stop_tokens=("<|im_end|>",)),
    "diffucoder": InfillFormat("diffucoder", bos=True, eos_after_suffix=True, stop_tokens=("<|im_end|>",)),
    "dreamon": InfillFormat("dreamon", bos=True, eos_after_suffix=True, variable_length=True),
    "open-dcoder": InfillFormat("open-dcoder", bos=False, eos_after_suffix=False),
    "llada": InfillFormat("llada", bos=True, eos_after_suffix=True, stop_tokens=("<|eot_id|>",)),
    # The registry copy of Qwen2.5-Coder is an instruct model: its metadata eos <|im_end|>
    # ends a hole too, beside <|endoftext|> (the config's eos), <|fim_pad|> (the pad role)
    # and <|file_sep|> (the next file of a repository-level prompt: this file is over).
    "causal": InfillFormat("causal", bos=False, eos_after_suffix=False,
                           stop_tokens=(CAUSAL_EOS_TOKEN, FIM_TOKENS["pad"], FILE_SEP_TOKEN, "<|im_end|>")),
}


def format_for(cfg: ModelConfig) -> InfillFormat | None:
    """The family's format; None for our own "diffill" layout (it has its own builder)."""
    if cfg.layout == "diffill":
        return None
    if cfg.layout == "causal":
        return FORMATS["causal"]
    return FORMATS.get(cfg.model_type, InfillFormat(cfg.model_type, bos=True, eos_after_suffix=False))


def build(seg_ids: list[list[int]], budgets: list[int], sp: SpecialIds, fmt: InfillFormat,
          suffix_complete: bool = True, expanding: bool = False) -> Layout:
    """The family's layout of a request.

    suffix_complete: False when truncation cut the last segment (then no closing EOS).
    expanding: the caller applies `expand_hole`/`delete_ends` after each step, so a
    variable-length format starts its holes short; otherwise holes get their full budget.
    """
    if expanding and fmt.variable_length:
        budgets = [min(b, DREAMON_INITIAL_MASKS) for b in budgets]
    return build_natural_framed(seg_ids, budgets, sp, bos=fmt.bos, eos=fmt.eos_after_suffix and suffix_complete)


def causal_context(prefix: list[int], suffix: list[int], sp: SpecialIds, order: str | None = None) -> list[int]:
    """The context of one causal hole, whose next token is the hole's first, in `order`
    (one of FIM_ORDERS; None: the FIM_ORDER_ENV debugging switch, else DEFAULT_FIM_ORDER)."""
    order = order or os.environ.get(FIM_ORDER_ENV) or DEFAULT_FIM_ORDER
    if order == "psm":
        return [sp.pre, *prefix, sp.suf, *suffix, sp.mid]
    if order == "spm":
        return [sp.suf, *suffix, sp.pre, *prefix, sp.mid]
    if order == "spm-variant":
        return [sp.pre, sp.suf, *suffix, sp.mid, *prefix]
    raise CoreError(f"fim order (or ${FIM_ORDER_ENV}): {order!r} is not one of {', '.join(FIM_ORDERS)}")


def end_ids(tokenizer: Tokenizer, fmt: InfillFormat | None) -> tuple[int, ...]:
    """Tokens that end a hole: eos, pad and the family's stop tokens present in the vocabulary."""
    ids = set(tokenizer.special.end_ids())
    for name in fmt.stop_tokens if fmt else ():
        tid = tokenizer.token_to_id(name)
        if tid is not None:
            ids.add(tid)
    return tuple(sorted(ids))


def banned_ids(sp: SpecialIds, fmt: InfillFormat | None, expanding: bool = False) -> tuple[int, ...]:
    """Tokens whose logits the sampler should set to -inf before choosing: they are not text.

    The expand token stays allowed only when the caller implements DreamOn's expansion.
    """
    ids = {sp.mask}
    if fmt is not None and fmt.name == "causal":
        # The FIM markers are structure, not text: committing one would start a new frame.
        ids |= {i for i in (sp.pre, sp.suf, sp.mid) if i is not None}
    if sp.bos is not None and sp.bos not in sp.end_ids():
        ids.add(sp.bos)
    if sp.expand is not None and not (expanding and fmt and fmt.variable_length):
        ids.add(sp.expand)
    return tuple(sorted(ids))
