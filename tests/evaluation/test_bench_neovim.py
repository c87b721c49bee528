"""``diffill bench neovim``: where it pauses, and one real run (headless Neovim, the shipped
Lua, ``diffill lsp`` on a tiny random model) whose JSON line counts what happened."""

from __future__ import annotations

import json
import random

import pytest

from evaluation import bench_neovim as bench

NVIM, WHY_NOT = bench.find_nvim()

SOURCE = '''import os


def f(a, b):
    """Doc.

    More doc."""
    x = (a +
         b)  # a comment
    if x:
        return x
    return None


class C:
    def m(self):
        y = 1
        return y
'''


def test_places_end_logical_lines_inside_function_bodies():
    # 0-based: "if x:", "return x", "return None", "y = 1", "return y"; not the docstring, not the
    # bracket's first line, not the commented line, not the module level
    assert bench.pause_lines(SOURCE) == [9, 10, 11, 16, 17]
    places = bench.pick_places(SOURCE, 3, random.Random(0))
    assert places == bench.pick_places(SOURCE, 3, random.Random(0))  # the seed decides
    assert len(places) == 3 and len({p["line"] for p in places}) == 3
    assert all(p["kind"] in ("eol", "newline") and 500 <= p["move_ms"] <= 1500 for p in places)
    assert len(bench.pick_places(SOURCE, 10, random.Random(0))) == 5  # no more than there are


@pytest.mark.e2e
@pytest.mark.skipif(NVIM is None, reason=WHY_NOT)
def test_one_file_two_places_in_real_neovim(tmp_path, capsys):
    from evaluation.tiny_model import make_tiny_model

    model = make_tiny_model(tmp_path / "model", seed=0)
    assert bench.main(["--model", str(model), "--device", "cpu", "--files", "textwrap", "--places", "2",
                       "--settle-s", "0", "--max-tokens", "8"]) == 0
    captured = capsys.readouterr()
    r = json.loads(captured.out.strip().split("\n")[-1])
    assert r["bench"] == "neovim" and r["inline"] is True and r["nvim"].startswith("0.")
    assert r["model"] == model.name and r["device"] == "cpu" and r["weights"]
    assert len(r["load_start"]) == 3 and len(r["load_end"]) == 3 and "cpu" in r["machine"]
    assert r["threads"] is not None and r["clients"] == 1  # one server for every file
    (f,) = r["per_file"]
    assert f["file"] == "textwrap.py" and f["lines"] >= 300 and r["places"] == f["places"] == 2
    assert len(f["per_place"]) == 2 and sum(f["outcomes"].values()) == 2
    assert f["answered"] == f["outcomes"]["ghost"] == r["answered"] >= 1
    assert f["outcomes"]["error"] == f["outcomes"]["late"] == 0  # a tiny core answers well within 10 s
    assert r["first_ghost_ms"] == [f["first_ghost_ms"]]
    for p in f["per_place"]:
        assert p["requests"] >= 1 and p["requests_other_buffers"] == 0 and p["restored"]
        # what the user waits for includes Neovim's own 200 ms debounce before the request
        assert p["first_request_after_key_ms"] >= 150
        if p["outcome"] == "ghost":
            assert p["from_key_ms"] >= p["first_request_after_key_ms"] and p["ghost_ms"] >= p["from_key_ms"]
    # the warm-up place (another file, wiped) and the two places: at least one request each
    assert r["requests"] >= 3 and r["requests_other_buffers"] == 0 and r["warmup_ghost_ms"] is not None
    assert "textwrap.py" in captured.err and "first ghost ms" in captured.err
