"""Per-family infill layouts and DreamOn's expand / delete rules."""
from __future__ import annotations

import pytest
import torch

from ckpt_fixtures import make_dream, make_llada
from diffusion_core.tokens import infill_formats as fmts
from diffusion_core.tokens.layout import Layout
from diffusion_core.loading.loader import load_model
from diffusion_core.generation.sampler import HoleState, resize_holes
from diffusion_core.tokens.tokenizer import SpecialIds

SP = SpecialIds(mask=9, eos=1, bos=2, pad=1, expand=7)
SEGS = [[10, 11], [12], [13, 14]]


def build_natural(seg_ids: list[list[int]], budgets: list[int], sp: SpecialIds) -> Layout:
    """The plain natural layout written out, the reference of the framed one: [BOS] s0 H1 s1 ... Hn sn."""
    ids: list[int] = [sp.bos] if sp.bos is not None else []
    holes = []
    for i, s in enumerate(seg_ids):
        ids.extend(s)
        if i < len(budgets):
            holes.append((len(ids), len(ids) + budgets[i]))
            ids.extend([sp.mask] * budgets[i])
    return Layout(ids, 0, holes, "natural")


def test_dream_frame_is_bos_prefix_masks_suffix_eos():
    lay = fmts.build(SEGS, [3, 2], SP, fmts.FORMATS["dream"])
    assert lay.ids == [2, 10, 11, 9, 9, 9, 12, 9, 9, 13, 14, 1]
    assert lay.holes == [(3, 6), (7, 9)] and lay.kind == "natural" and lay.n_context == 0


def test_truncated_suffix_gets_no_eos():
    lay = fmts.build(SEGS, [3, 2], SP, fmts.FORMATS["dream"], suffix_complete=False)
    assert lay.ids[-1] == 14


def test_open_dcoder_has_no_frame():
    lay = fmts.build(SEGS, [1, 1], SP, fmts.FORMATS["open-dcoder"])
    assert lay.ids == [10, 11, 9, 12, 9, 13, 14]


def test_framed_without_eos_equals_the_plain_natural_layout():
    for budgets in ([0, 0], [1, 5], [4, 0]):
        a = fmts.build_natural_framed(SEGS, budgets, SP, bos=True, eos=False)
        b = build_natural(SEGS, budgets, SP)
        assert (a.ids, a.holes) == (b.ids, b.holes)


def test_dreamon_starts_short_only_when_the_caller_expands():
    lay = fmts.build(SEGS, [10, 2], SP, fmts.FORMATS["dreamon"], expanding=True)
    assert [e - s for s, e in lay.holes] == [fmts.DREAMON_INITIAL_MASKS, 2]
    lay = fmts.build(SEGS, [10, 2], SP, fmts.FORMATS["dreamon"])
    assert [e - s for s, e in lay.holes] == [10, 2]


def test_expand_turns_one_position_into_two_masks_within_budget():
    x = torch.tensor([2, 10, 5, 7, 6, 7, 12])  # hole is [2, 6): 5 E 6 E
    holes = [HoleState(2, 6, 32, budget=5)]
    out = resize_holes(x, holes, SP.mask, SP.expand, SP.end_ids())
    assert out.tolist() == [2, 10, 5, 9, 9, 6, 9, 12]
    assert (holes[0].start, holes[0].end) == (2, 7)  # one expansion fitted the budget of 5, the second became one mask


def test_expand_then_delete_reference_walk_moves_later_holes():
    """A slow walk over the rules: grow twice, then the model deletes two positions; the
    second hole follows the first one's length."""
    holes = [HoleState(1, 3, 32, budget=8), HoleState(4, 5, 32, budget=3)]
    x = resize_holes(torch.tensor([2, 7, 7, 13, 9, 14]), holes, SP.mask, SP.expand, SP.end_ids())
    assert x.tolist() == [2, 9, 9, 9, 9, 13, 9, 14] and [(h.start, h.end) for h in holes] == [(1, 5), (6, 7)]
    x[1:5] = torch.tensor([20, 1, 21, 1])
    x = resize_holes(x, holes, SP.mask, SP.expand, SP.end_ids())
    assert x.tolist() == [2, 20, 21, 13, 9, 14] and [(h.start, h.end) for h in holes] == [(1, 3), (4, 5)]
    same = resize_holes(x, holes, SP.mask, SP.expand, SP.end_ids())
    assert same is x  # nothing to do: the sequence is returned as it was


def test_expansion_stops_at_the_budget_and_after_budget_expansions():
    h = HoleState(0, 4, 32, budget=4)
    assert not h.may_expand()  # at its budget
    h = HoleState(0, 2, 32, budget=4, expansions=4)
    assert not h.may_expand()  # expand / delete cycles are bounded


@pytest.mark.parametrize("variant", ["dream", "dreamon", "diffucoder", "open-dcoder", "llada"])
def test_token_rules_of_each_family(tmp_path, variant):
    folder = make_llada(tmp_path / variant) if variant == "llada" else make_dream(tmp_path / variant, variant=variant)
    lm = load_model(folder, "cpu")
    fmt = fmts.format_for(lm.config)
    assert fmt.name == variant
    sp, tok = lm.tokenizer.special, lm.tokenizer
    ends = fmts.end_ids(tok, fmt)
    banned = fmts.banned_ids(sp, fmt)
    assert sp.eos in ends and sp.mask in banned and not set(ends) & set(banned)
    if variant == "diffucoder":
        assert tok.token_to_id("<|dlm_pad|>") in ends
    if variant == "llada":
        assert tok.token_to_id("<|eot_id|>") in ends
    if variant == "dreamon":
        assert sp.expand in banned  # a literal <|expand|> is no text unless the caller expands
        assert sp.expand not in fmts.banned_ids(sp, fmt, expanding=True)
    if variant in ("dream", "dreamon", "diffucoder", "llada"):
        assert sp.bos in banned


def test_own_layout_has_no_foreign_format(tmp_path):
    from evaluation.tiny_model import make_tiny_model

    lm = load_model(make_tiny_model(tmp_path / "own"), "cpu")
    assert fmts.format_for(lm.config) is None
