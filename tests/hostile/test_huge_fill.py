"""A huge fill (issue 17 item 6): the core cuts text to what the context window can hold
before tokenizing it, so work and memory are bounded by the window, not by the input;
the prefix cut is aligned so the context cache survives typing."""
from diffusion_core.tokens import textcut
from diffusion_core.generation.engine import Engine, HoleSpec
from diffusion_core.generation.params import FillParams


def test_text_that_fits_is_untouched():
    segs = ["def f(", "):\n    pass\n"]
    assert textcut.cut_segments(segs, 2048) is segs


def test_each_side_is_bounded_by_the_window():
    keep = textcut.char_budget(100)
    segs = ["a" * 10 * keep, "m" * 10 * keep, "z" * 10 * keep]
    out = textcut.cut_segments(segs, 100)
    assert len(out) == 3
    assert len(out[0]) <= keep and out[0] == segs[0][-len(out[0]):]  # the end nearest the hole
    assert len(out[-1]) == keep and out[-1] == segs[-1][:keep]  # the start nearest the hole
    assert len(out[1]) <= keep and out[1].startswith("m") and len(out[0]) >= keep * 3 // 4


def test_prefix_cut_is_stable_while_typing():
    keep = textcut.char_budget(64)
    prefix = "".join(f"line {i}\n" for i in range(keep))  # longer than keep
    suffix = "\nrest\n"
    starts = set()
    for typed in ("", "x", "x = ", "x = 1"):
        out = textcut.cut_segments([prefix + typed, suffix], 64)
        assert out[0].endswith(typed)
        starts.add(len(prefix) + len(typed) - len(out[0]))
    assert len(starts) == 1  # the same absolute cut point: the kept text only grows


def test_engine_never_tokenizes_more_than_the_window(tiny_dir):
    engine = Engine.load(tiny_dir, "cpu")
    seen = []
    encode_batch = engine.tokenizer.encode_batch

    def spy(texts):
        seen.append([len(t) for t in texts])
        return encode_batch(texts)

    engine.tokenizer.encode_batch = spy
    big = "x = 1\n" * 500_000  # 3 MB on each side of the hole
    params = FillParams(steps=1)
    first = engine.fill([big + "def f(", "):\n" + big], [HoleSpec(4)], params)
    keep = textcut.char_budget(engine.config.max_context)
    assert seen and all(n <= keep for n in seen[-1])
    assert first.stats.context_tokens <= engine.config.max_context
    # Typing one character at the hole: the context's keys/values are reused.
    second = engine.fill([big + "def fo(", "):\n" + big], [HoleSpec(4)], params)
    assert second.stats.reused_tokens > engine.config.max_context // 2
