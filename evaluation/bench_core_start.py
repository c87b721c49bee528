"""Where a core's start goes: the phases between `exec` and the first good completion.

Owns one experiment: a fresh interpreter (as `diffusion_core.serving.service` starts) walks the
steps of `Engine.load` one at a time (the same public functions `base_model.load_base`
and `loader.load_model` call, in their order) and times each, then the first and second
fill; the parent times the interpreter's own start. Run several times, medians reported.
Also the child's memory after load and after the first fill: RssAnon (its own pages) and
RssFile (file pages mapped from the page cache, shared with every other process mapping
the same cached weights), and its minor page faults.

Must not know: engine internals beyond its public load path; it changes nothing.

    diffill bench core-start [--model DIR] [--runs 3] [--threads 1]

Without --model: the default model (Qwen2.5-Coder-0.5B, from its converted cache).
Prints a table, then one JSON line last.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

SEGMENTS = ["def add(a, b):\n    ", "\n"]  # the probe fill of bench_hostile
BUDGET = 8


def _mem() -> dict:
    """This process's RssAnon / RssFile in MB (from /proc) and minor faults so far."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("RssAnon", "RssFile", "VmRSS"):
                out[key] = round(int(value.split()[0]) / 1024)
    out["minflt"] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    return out


def child(model: str | None, threads: int, t_exec: float) -> None:
    """One core start, phase by phase; prints one JSON line."""
    t = {"python_start": time.time() - t_exec}
    clock = time.perf_counter()

    def mark(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        t[name] = now - clock
        clock = now

    import torch
    mark("import_torch")
    if threads > 0:
        torch.set_num_threads(threads)
    from diffusion_core.serving import service  # noqa: F401 (what `diffill core` imports first)
    from diffusion_core.generation.engine import Engine, HoleSpec
    from diffusion_core.loading.loader import LoadedModel, assign_weights, default_dtype, meta_model, resolve_device
    from diffusion_core.network.config import ModelConfig
    from diffusion_core.tokens.tokenizer import Tokenizer
    from diffusion_core.loading.weights import read_tensors, weight_files
    mark("import_diffill")
    dev = resolve_device("cpu")
    dtype = default_dtype(dev)
    if model:
        from pathlib import Path
        folder = Path(model)
    else:
        from diffusion_core.loading import base_model
        folder = base_model.base_folder(None, dtype)  # the sha check is a stat lookup once cached
    mark("locate_and_check")
    cfg = ModelConfig.load(folder / "config.json")
    tensors = read_tensors(weight_files(folder))
    mark("open_weights")
    tokenizer = Tokenizer(folder / "tokenizer.json", cfg.special_tokens)
    mark("tokenizer")
    net = meta_model(cfg)
    mark("build_meta_model")
    assign_weights(net, tensors, str(folder), dev, dtype)
    net.eval().requires_grad_(False)
    engine = Engine(LoadedModel(net, tokenizer, cfg, folder))
    mark("assign_weights_engine")  # Engine() attaches a packaged draft adapter, if one fits
    mem_loaded = _mem()
    first = engine.fill(SEGMENTS, [HoleSpec(budget=BUDGET)])
    mark("first_fill")
    mem_filled = _mem()
    engine.forget_contexts()
    second = engine.fill(SEGMENTS, [HoleSpec(budget=BUDGET)])
    mark("second_fill")
    t["first_encode"] = first.stats.encode_ms / 1e3
    t["second_encode"] = second.stats.encode_ms / 1e3
    print(json.dumps({"t": t, "loaded": mem_loaded, "filled": mem_filled, "text": first.texts[0],
                      "same": first.texts == second.texts, "threads": torch.get_num_threads()}))


PHASES = ("python_start", "import_torch", "import_diffill", "locate_and_check", "open_weights", "tokenizer",
          "build_meta_model", "assign_weights_engine", "first_fill", "first_encode", "second_fill", "second_encode")
READY = PHASES[:8]  # what a restarted core spends before it can answer hello


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="diffill bench core-start", description=__doc__.split("\n")[0],
                                epilog="example:\n  diffill bench core-start --runs 3",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads in the child (bench_hostile's cores use 1)")
    p.add_argument("--child", type=float, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child is not None:
        child(args.model, args.threads, args.child)
        return 0
    runs = []
    for i in range(args.runs):
        cmd = [sys.executable, "-m", "evaluation.bench_core_start", "--threads", str(args.threads),
               "--child", repr(time.time())]
        if args.model:
            cmd += ["--model", args.model]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=os.path.dirname(os.path.dirname(
            os.path.abspath(__file__))))
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"run {i + 1}/{args.runs} done", file=sys.stderr)
    med = {k: round(statistics.median(r["t"][k] for r in runs), 3) for k in PHASES}
    width = max(len(k) for k in PHASES)
    print(f"{'phase':{width}s}  median_s  runs")
    for k in PHASES:
        print(f"{k:{width}s}  {med[k]:8.3f}  " + " ".join(f"{r['t'][k]:.2f}" for r in runs))
    ready = round(statistics.median(sum(r["t"][k] for k in READY) for r in runs), 3)
    print(f"{'to ready (sum)':{width}s}  {ready:8.3f}")
    out = {"machine": f"{platform.node()} {os.cpu_count()} cpu", "model": args.model or "default",
           "threads": runs[0]["threads"], "runs": args.runs, "median_s": med, "to_ready_s": ready,
           "mem_loaded_mb": runs[-1]["loaded"], "mem_after_fill_mb": runs[-1]["filled"],
           "first_text": runs[0]["text"], "outputs_identical": all(r["same"] and r["text"] == runs[0]["text"] for r in runs)}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
