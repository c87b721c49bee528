"""The llama.cpp peer: its FIM prompt, the joined GGUF file, and the stop rule over a token stream.

Only the last test needs llama-cpp-python (a benchmark-only extra); it runs on a tiny random
GGUF written by the checkpoint tests' fixture, never on the real model.
"""
import hashlib
import os
from pathlib import Path

import pytest

from diffusion_core.errors import CoreError
from diffusion_core.generation.sampler import stop_point
from evaluation.peer_llamacpp import (StopRule, fill_text, fim_prompt, joined_gguf, prompt_ids,
                                      take_until_stop)

MARKS = {"pre": 900, "suf": 901, "mid": 902}


@pytest.fixture(autouse=True)
def _psm_and_private_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("DIFFILL_FIM_ORDER", "psm")  # the prompt tests below spell the PSM frame
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # hashes.json stays out of the user's cache


# -- prompt ------------------------------------------------------------------------------------

def test_the_prompt_is_qwen_psm_fim():
    assert fim_prompt("def f(x):\n    return ", "\n") == \
        "<|fim_prefix|>def f(x):\n    return <|fim_suffix|>\n<|fim_middle|>"
    assert prompt_ids([1, 2, 3], [4, 5], MARKS, 100) == [900, 1, 2, 3, 901, 4, 5, 902]
    assert prompt_ids([], [], MARKS, 100) == [900, 901, 902]


def test_a_long_prompt_keeps_the_text_nearest_the_hole():
    prefix, suffix = list(range(1000, 3000)), list(range(5000, 5100))
    ids = prompt_ids(prefix, suffix, MARKS, 512)
    p = ids[1: ids.index(901)]
    s = ids[ids.index(901) + 1: -1]
    assert ids[0] == 900 and ids[-1] == 902
    assert len(p) + len(s) <= 512
    assert p == prefix[len(prefix) - len(p):]  # the prefix loses its start
    assert s == suffix[: len(s)] and len(s) > 0  # the suffix loses its end


# -- stop rule over a stream ---------------------------------------------------------------------

VOCAB = {i: c for i, c in enumerate("abcdefghijklmnopqrstuvwxyz0123456789\n (){}:=")}
END = 99
ID = {c: i for i, c in VOCAB.items()}


def decode(ids):
    return "".join(VOCAB[i] for i in ids)


class Stream:
    """A token stream that counts how many tokens were asked for."""

    def __init__(self, tokens):
        self.tokens, self.pulled = list(tokens), 0

    def __iter__(self):
        for t in self.tokens:
            self.pulled += 1
            yield t


def chars(text):
    return [END if c == "$" else ID[c] for c in text]


def test_a_line_hole_ends_at_its_newline_and_asks_for_nothing_more():
    s = Stream(chars("x = f(y)\nz = 1\n"))
    ids, cut, why = take_until_stop(iter(s), decode, {END}, 64, StopRule(max_lines=1))
    assert why == "stop" and s.pulled == len("x = f(y)\n") == len(ids)
    assert fill_text(ids, cut, decode) == "x = f(y)"


def test_an_end_token_is_not_kept():
    s = Stream(chars("ab$cd"))
    ids, cut, why = take_until_stop(iter(s), decode, {END}, 64, StopRule(max_lines=1))
    assert (decode(ids), cut, why, s.pulled) == ("ab", None, "end", 3)


def test_the_budget_caps_the_tokens():
    s = Stream(chars("abcdefgh"))
    ids, cut, why = take_until_stop(iter(s), decode, {END}, 3, StopRule())
    assert (decode(ids), why, s.pulled) == ("abc", "budget", 3)
    s = Stream(chars("abc"))
    assert take_until_stop(iter(s), decode, {END}, 0, StopRule()) == ([], None, "budget") and s.pulled == 0
    assert take_until_stop(iter(chars("ab")), decode, {END}, 9, StopRule())[2] == "stream"


@pytest.mark.parametrize("text, rule", [
    ("if x:\n    y = 1\nz = 2\n", StopRule(dedent_below=4)),  # a block ends before the dedented line
    ("a\n\nb\nc\nd\n", StopRule(max_lines=2)),  # blank lines do not count
    ("f(a) b)\n", StopRule(min_depth=0)),  # a closing bracket it did not open
    ("f(a)\n", StopRule(min_depth=0)),  # no stop: runs to the stream's end
])
def test_streaming_stops_where_the_stop_rule_cuts_the_whole_text(text, rule):
    ids, cut, why = take_until_stop(iter(chars(text)), decode, {END}, 64, rule)
    want = stop_point(text, rule.max_lines, rule.dedent_below, rule.min_depth)
    assert fill_text(ids, cut, decode) == (text if want is None else text[:want])
    assert why == ("stream" if want is None else "stop")


# -- the joined GGUF -----------------------------------------------------------------------------

def _parts(tmp_path, chunks):
    paths = []
    for i, data in enumerate(chunks, 1):
        p = tmp_path / "wheels" / f"part{i:02d}.bin"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        paths.append(p)
    return paths


def test_the_parts_are_joined_once_and_checked(tmp_path):
    chunks = [b"GGUF" + bytes(range(256)) * 3, b"", os.urandom(5000), b"tail"]
    parts, want = _parts(tmp_path, chunks), hashlib.sha256(b"".join(chunks)).hexdigest()
    out = tmp_path / "out"
    dest = joined_gguf(parts, want, out)
    assert dest == out / f"{want}.gguf" and dest.read_bytes() == b"".join(chunks)
    stamp = dest.stat().st_mtime_ns, dest.stat().st_ino
    assert joined_gguf(parts, want, out) == dest
    assert (dest.stat().st_mtime_ns, dest.stat().st_ino) == stamp  # reused, not written again
    assert sorted(p.name for p in out.iterdir()) == [dest.name]  # no temporary left behind


def test_a_damaged_joined_file_is_written_again(tmp_path):
    chunks = [b"one" * 100, b"two" * 100]
    parts, want = _parts(tmp_path, chunks), hashlib.sha256(b"".join(chunks)).hexdigest()
    dest = joined_gguf(parts, want, tmp_path / "out")
    dest.write_bytes(b"x" * dest.stat().st_size)  # same size, other bytes
    assert joined_gguf(parts, want, tmp_path / "out").read_bytes() == b"".join(chunks)


def test_parts_that_do_not_match_the_pin_leave_no_file(tmp_path):
    parts = _parts(tmp_path, [b"abc", b"def"])
    with pytest.raises(CoreError, match="not the pinned " + "0" * 64):
        joined_gguf(parts, "0" * 64, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


# -- llama.cpp itself (the benchmark extra) -----------------------------------------------------

def test_llamacpp_fills_greedily_stops_at_the_line_and_reuses_its_prompt(tmp_path, monkeypatch):
    pytest.importorskip("llama_cpp")
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "checkpoints"))
    from gguf_fixtures import make_gguf, split_file

    from evaluation.peer_llamacpp import LlamaCppPeer

    tiny = make_gguf(tmp_path / "tiny.gguf")
    parts = split_file(tiny.path, tmp_path / "parts", 3)
    path = joined_gguf(parts, hashlib.sha256(tiny.path.read_bytes()).hexdigest(), tmp_path / "joined")
    peer = LlamaCppPeer(path, threads=1, n_ctx=512)
    prefix, suffix = "def add(a, b):\n    return ", "\n\nprint(add(1, 2))\n"
    text, st = peer.fill(prefix, suffix, 12, single_line=True)
    assert "\n" not in text and st.tokens <= 12 and st.ended in ("end", "stop", "budget")
    # one forward for the prompt, one per kept token after the first (and one more that saw an end token)
    assert st.forwards == st.tokens + (st.ended == "end")
    assert st.prompt_tokens == len(peer.prompt(prefix, suffix, 12)) and st.reused_tokens == 0
    again, st2 = peer.fill(prefix, suffix, 12, single_line=True)
    assert again == text and st2.reused_tokens == st2.prompt_tokens - 1 and st2.prompt_eval_tokens == 1
    cold = LlamaCppPeer(path, threads=1, n_ctx=512, prompt_cache=False)
    cold.fill(prefix, suffix, 12, single_line=True)
    third, st3 = cold.fill(prefix, suffix, 12, single_line=True)
    assert third == text and st3.reused_tokens == 0 and st3.prompt_eval_tokens == st3.prompt_tokens
