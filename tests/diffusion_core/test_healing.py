"""Token healing: the tokenizer's heal point and candidates against brute force over the
vocabulary, and a healed diffusion hole (the "diffill" layout) against the reference loop."""
import pytest
import torch

from diffusion_core.generation.engine import HoleSpec
from diffusion_core.tokens.layout import build_diffill, full_mask
from diffusion_core.generation.params import FillParams
from diffusion_core.generation.sampler import trim
from tests.checkpoints.reference_sampler import denoise_reference
from diffusion_core.tokens.tokenizer import HEAL_MAX_TOKENS

ENDINGS = ["x = resu", "        self.x = x\n        sel", "a +", "a  ", "return a + b", "fn main() { let x",
           "for i in range(10", "print(i)", "", "x = 1\n", "a ==", "self.", "\u00e9t", "\u00e9t\u00e9\u00e9"]


def brute_candidates(tok, pending: bytes, whole: bool) -> set[int]:
    out = set()
    for t in range(tok.vocab_size):
        b = tok.token_bytes(t)
        if not b:
            continue
        if b.startswith(pending) or (not whole and pending.startswith(b) and len(b) < len(pending)):
            out.add(t)
    return out


@pytest.mark.parametrize("text", ENDINGS)
def test_heal_point_removes_the_last_chunk_when_the_text_ends_inside_it(engine, text):
    tok = engine.tokenizer
    ids = tok.encode(text)
    h = tok.heal_point(text, ids)
    if not text or text[-1].isspace():
        assert h is None
        return
    chunk = text[tok._tok.pre_tokenizer.pre_tokenize_str(text)[-1][1][0]:]
    if len(tok.encode(chunk)) > HEAL_MAX_TOKENS:
        assert h is None  # a long run is left alone
        return
    assert h is not None and 1 <= h.removed == len(ids) - h.keep
    assert text.endswith(h.text) and tok.decode(ids[: h.keep]) == text[: len(text) - len(h.text)]
    assert b"".join(tok.token_bytes(t) for t in ids[h.keep:]) == h.text.encode()
    # the chunk is the pre-tokenizer's last one: tokens never cross it
    assert h.text == text[tok._tok.pre_tokenizer.pre_tokenize_str(text)[-1][1][0]:]


@pytest.mark.parametrize("pending", [b" resu", b"e", b" +", b"(", b"sel", b" x", b"\xc3", b"zzzz"])
@pytest.mark.parametrize("whole", [False, True])
def test_heal_candidates_are_every_agreeing_token(engine, pending, whole):
    tok = engine.tokenizer
    assert set(tok.heal_candidates(pending, whole)) == brute_candidates(tok, pending, whole)


def test_special_tokens_are_never_candidates(engine):
    tok = engine.tokenizer
    sp = tok.special
    assert all(tok.token_bytes(t) is None for t in (sp.mask, sp.eos, sp.suf, sp.pre, sp.mid))


def test_decode_healed_drops_the_recreated_text(engine):
    tok = engine.tokenizer
    h = tok.heal_point("x = resu", tok.encode("x = resu"))
    ids = tok.encode(" result = 1")
    assert tok.decode_healed(ids, h) == "lt = 1"
    assert tok.decode_healed(ids[:1], h) in ("", tok.decode(ids[:1])[len(" resu"):])
    assert tok.decode_healed(ids, None) == " result = 1"


SEGMENTS = ["def add(a, b):\n    return a + b\n\nclass Point:\n    def __init__(self, x, y):\n        self.x = x\n        sel",
            "\n        self.y = y\n"]


@pytest.mark.parametrize("params", [
    FillParams(strategy="threshold", threshold=0.9, block_size=4),
    FillParams(strategy="topk", steps=3, block_size=8),
    FillParams(strategy="topk", steps=0, block_size=2),
])
def test_healed_diffill_hole_equals_the_reference_loop(engine, params):
    """The engine's exact-cache path with healing against the slow loop, whose first hole
    position may take only tokens (found by brute force) that start with the removed text."""
    tok, sp = engine.tokenizer, engine.tokenizer.special
    prefix, suffix = SEGMENTS
    ids = tok.encode(prefix)
    removed = prefix[tok._tok.pre_tokenizer.pre_tokenize_str(prefix)[-1][1][0]:]
    keep = next(k for k in range(len(ids) + 1) if tok.decode(ids[:k]) == prefix[: len(prefix) - len(removed)])
    budget = 10
    layout = build_diffill([ids[:keep], tok.encode(suffix)], [budget + 1], sp)  # one more position re-creates it
    job = engine.begin(SEGMENTS, [HoleSpec(budget)], params)
    assert job.layout.ids == layout.ids
    res = engine.fill(SEGMENTS, [HoleSpec(budget)], params)

    T = len(layout.ids)
    mask = full_mask(layout.kind, layout.n_context, T)

    def full_logits(x):
        with torch.inference_mode():
            return engine.model(x[None], torch.arange(T)[None], mask[None, None])[0].float()

    first = layout.holes[0][0]
    allowed = sorted(brute_candidates(tok, removed.encode(), whole=True))
    x, _ = denoise_reference(full_logits, torch.tensor(layout.ids), layout.holes, params, sp.mask, engine.end_ids,
                             engine.config.logits_shift, banned=engine.banned, allowed={first: allowed})
    s, e = layout.holes[0]
    got = trim(x[s:e].tolist(), engine.end_ids)
    assert res.token_ids[0] == got
    text = tok.decode(got)
    assert text.startswith(removed) and res.texts[0] == text[len(removed):]


def test_heal_off_leaves_the_diffill_layout_as_typed(engine):
    tok, sp = engine.tokenizer, engine.tokenizer.special
    job = engine.begin(SEGMENTS, [HoleSpec(10)], FillParams(heal="off"))
    assert job.layout.ids == build_diffill([tok.encode(s) for s in SEGMENTS], [10], sp).ids
