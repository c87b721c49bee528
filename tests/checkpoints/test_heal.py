"""Token healing on the causal layout against a slow, obviously correct reference.

The reference backs the prefix up to the start of its last pre-token chunk (when the prefix
does not end on whitespace), runs transformers' own model with a full forward over the whole
sequence every step, and while the removed text is not re-created tries every vocabulary id
by decoding: an id may come next when the text so far plus its text still agrees with the
removed text (one is a prefix of the other) and it adds text. Then plain greedy decoding.
"""
from __future__ import annotations

import pytest
import torch

from test_causal import fill, make_causal_lm
from diffusion_core.generation.engine import Engine, HoleSpec
from diffusion_core.generation.params import FillParams
from diffusion_core.tokens.infill_formats import causal_context
from diffusion_core.generation.sampler import stop_point

transformers = pytest.importorskip("transformers")

BODY = "def add(a, b):\n    return a + b\n\nclass Point:\n    def __init__(self, x, y):\n"
SUFFIX = "\n        self.y = y\n\nfor i in range(10):\n    print(i)\n"
PREFIXES = [
    BODY + "        self.x = x\n        sel",  # inside a word (chunk " sel")
    BODY + "        self.x = x +",  # after an operator (chunk " +")
    BODY + "        self.x = resu",  # a chunk of several tokens
    BODY + "        self.x = ",  # on whitespace: nothing to heal
]


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    return make_causal_lm(tmp_path_factory.mktemp("qwen2-heal"), seed=3)


@pytest.fixture(scope="module")
def engine(qwen_dir):
    return Engine.load(qwen_dir, "cpu", dtype=torch.float32)


@pytest.fixture(scope="module")
def hf_model(qwen_dir):
    return transformers.AutoModelForCausalLM.from_pretrained(qwen_dir, dtype=torch.float32).eval()


def removed_text(tok, prefix: str) -> tuple[list[int], str]:
    """(the prompt's ids, the text healing removed), by brute force."""
    ids = tok.encode(prefix)
    if prefix[-1].isspace():
        return ids, ""
    start = tok._tok.pre_tokenizer.pre_tokenize_str(prefix)[-1][1][0]
    keep = next(k for k in range(len(ids) + 1) if tok.decode(ids[:k]) == prefix[:start])
    return ids[:keep], prefix[start:]


def reference(model, eng, prefix: str, suffix: str, budget: int, before: list[int] = ()) -> tuple[list[int], str]:
    """The healed fill after `before` (ids) + `prefix` (text)."""
    tok = eng.tokenizer
    kept, removed = removed_text(tok, prefix)
    prompt = causal_context(list(before) + kept, tok.encode(suffix), tok.special)
    specials = set(tok._tok.get_added_tokens_decoder())
    gen: list[int] = []
    with torch.no_grad():
        for _ in range(budget + len(tok.encode(prefix)) - len(kept)):
            logits = model(torch.tensor([prompt + gen])).logits[0, -1].clone()
            so_far = tok.decode(gen)
            if so_far.startswith(removed):
                logits[list(eng.banned)] = float("-inf")
            else:
                def agrees(t: int) -> bool:
                    s = tok.decode(gen + [t])
                    return len(s) > len(so_far) and (s.startswith(removed) or removed.startswith(s))
                ok = [t for t in range(tok.vocab_size) if t not in specials and agrees(t)]
                keep = torch.full_like(logits, float("-inf"))
                keep[ok] = logits[ok]
                logits = keep
            t = int(logits.argmax())
            if t in eng.end_ids:
                break
            gen.append(t)
    text = tok.decode(gen)
    return gen, text[len(removed):] if text.startswith(removed) else ""


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("budget", [1, 12])
def test_healed_fill_equals_the_brute_force_reference(engine, hf_model, prefix, budget):
    ids, text = reference(hf_model, engine, prefix, SUFFIX, budget)
    for strategy, cache in (("ar", "none"), ("ar", "auto"), ("lossless", "auto"), ("lossless", "none")):
        res = fill(engine, [prefix, SUFFIX], [budget], strategy=strategy, cache=cache)
        assert (res.token_ids[0], res.texts[0]) == (ids, text), (strategy, cache)


def test_the_fill_recreates_the_removed_text_first(engine):
    tok = engine.tokenizer
    for prefix in PREFIXES[:3]:
        kept, removed = removed_text(tok, prefix)
        assert removed and tok.heal_point(prefix, tok.encode(prefix)).text == removed
        res = fill(engine, [prefix, SUFFIX], [8], strategy="ar")
        assert tok.decode(kept + res.token_ids[0]) == prefix + res.texts[0]


def test_heal_off_keeps_the_prompt_as_typed(engine, hf_model):
    prefix = PREFIXES[0]
    res = fill(engine, [prefix, SUFFIX], [6], strategy="ar", heal="off")
    prompt = causal_context(engine.tokenizer.encode(prefix), engine.tokenizer.encode(SUFFIX), engine.tokenizer.special)
    with torch.no_grad():
        out = hf_model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                                max_new_tokens=6, do_sample=False, eos_token_id=list(engine.end_ids),
                                suppress_tokens=list(engine.banned), pad_token_id=engine.tokenizer.special.eos)
    new = out[0, len(prompt):].tolist()
    assert res.token_ids[0] == next((new[:i] for i, t in enumerate(new) if t in engine.end_ids), new)


def test_a_later_hole_is_healed_after_the_earlier_fill(engine, hf_model):
    """Two holes: the second one's prefix (first segment, first fill, second segment) ends mid-word."""
    first, second = "def add(a, b):\n    return ", "\n\nclass Point:\n    def __init__(self, x, y):\n        sel"
    res = fill(engine, [first, second, SUFFIX], [4, 6], strategy="ar")
    before = engine.tokenizer.encode(first) + res.token_ids[0]
    ids, text = reference(hf_model, engine, second, SUFFIX, 6, before)
    assert (res.token_ids[1], res.texts[1]) == (ids, text)


def test_stop_rules_read_the_text_after_the_healed_part(engine):
    """A one-line hole after `x = (` stops where the stop rule cuts the fill's own text: the
    healed `(` counts neither as a line of the fill nor as a bracket the fill opened."""
    prefix = BODY + "        self.x = ("
    free = fill(engine, [prefix, SUFFIX], [HoleSpec(16)], strategy="ar").texts[0]
    cut = stop_point(free, 1, -1, -1)
    res = fill(engine, [prefix, SUFFIX], [HoleSpec(16, max_lines=1, min_depth=-1)], strategy="ar")
    assert res.texts[0] == (free if cut is None else free[:cut])


def test_healed_dream_hole_equals_the_reference_loop_on_reference_logits(tmp_path):
    """The natural layout (a Dream checkpoint, shifted logits): the prompt loses the last chunk,
    the hole one more position, whose token (any that starts with the removed text, found by
    brute force) the slow loop over transformers' own model commits too."""
    from ckpt_fixtures import make_dream
    from test_parity import qwen2_reference
    from diffusion_core.tokens.infill_formats import build
    from diffusion_core.generation.sampler import trim
    from reference_sampler import denoise_reference

    folder = make_dream(tmp_path / "d", seed=5)
    ref = qwen2_reference(folder)
    eng = Engine.load(folder, device="cpu")
    tok, sp = eng.tokenizer, eng.tokenizer.special
    prefix, suffix = "def add(a, b):\n    return a + b\n\nclass Point:\n    def __init__(self, x, y):\n        sel", "\n"
    kept, removed = removed_text(tok, prefix)
    assert removed == " sel"
    params = FillParams(strategy="topk", steps=4, block_size=8, cache="none")
    layout = build([kept, tok.encode(suffix)], [9], sp, eng.format)
    job = eng.begin([prefix, suffix], [HoleSpec(8)], params)
    assert job.layout.ids == layout.ids
    while not job.done:
        eng.step([job])
    specials = set(tok._tok.get_added_tokens_decoder())
    allowed = [t for t in range(tok.vocab_size) if t not in specials and tok.decode([t]).startswith(removed)]
    s, e = layout.holes[0]
    with torch.no_grad():
        expected, _ = denoise_reference(lambda x: ref(x[None])[0], torch.tensor(layout.ids), layout.holes, params,
                                        sp.mask, eng.end_ids, eng.config.logits_shift, banned=eng.banned,
                                        allowed={s: allowed})
    assert torch.equal(job.x, expected)
    text = tok.decode(trim(expected[s:e].tolist(), eng.end_ids))
    assert text.startswith(removed) and job.result().texts[0] == text[len(removed):]
