"""The core's memory over a long session: RSS while many documents are completed once each.

Owns one measurement (issue 21, item 5): one engine, loaded as a core loads it, fills one
held-out hole in each of N documents through the editor's pipeline (the editor's windows,
the shipped post-processing), as a user opening a file, taking one completion and moving
on does; the process's memory is read from /proc/self/status at checkpoints: VmRSS (all
resident pages), RssAnon (private: what a second, standby core would add) and RssFile
(the memory-mapped weights, shared with a standby and evictable). A table on stderr and
one JSON line last on stdout.

    python -m evaluation.bench_memory --docs 500 --checkpoints 1,20,100,250,500
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

FIELDS = ("VmRSS", "RssAnon", "RssFile", "VmHWM")


def memory_mb() -> dict[str, float]:
    """This process's memory fields in MB (Linux)."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in FIELDS:
            out[key] = round(int(value.split()[0]) / 1024, 1)
    return out


async def _session(core, holes, settings, checkpoints: set[int]) -> list[dict]:
    from .bench_quality import shipped_fill

    rows, ms = [], []
    for i, hole in enumerate(holes, 1):
        _, out = await shipped_fill(core, hole, settings)
        ms.append(out.ms)
        if i in checkpoints:
            rows.append({"documents": i, **memory_mb(), "fill_ms_p50": round(statistics.median(ms), 1)})
            print(f"  {i:>5} documents: " + ", ".join(f"{k} {v}" for k, v in rows[-1].items() if k != "documents"),
                  file=sys.stderr)
    return rows


def run(args) -> dict:
    import torch

    from diffusion_core.generation.engine import Engine
    from diffusion_core.serving.local_core import LocalCore

    from .bench_quality import bench_settings, first_use_heldout
    from .heldout import load_files, sample_holes

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    engine = Engine.load(args.model or None, "cpu", weights=args.weights)
    loaded = {"load_s": round(time.perf_counter() - t0, 1), **memory_mb()}
    paths = args.heldout or first_use_heldout("corpus")
    holes = sample_holes(load_files(paths), args.docs, seed=args.seed)
    checkpoints = {c for c in args.checkpoints if c <= len(holes)} | {len(holes), min(args.baseline, len(holes))}
    rows = asyncio.run(_session(LocalCore(engine), holes, bench_settings(args), checkpoints))
    by = {r["documents"]: r for r in rows}
    base, last = by[min(args.baseline, len(holes))], rows[-1]
    return {"bench": "memory", "weights": engine.info()["weights"], "model": engine.info()["model"],
            "threads": args.threads, "documents": len(holes), "after_load": loaded, "checkpoints": rows,
            "baseline_documents": base["documents"], "growth_since_baseline": round(last["VmRSS"] / base["VmRSS"] - 1, 3),
            "prefix_bytes": args.prefix_bytes, "suffix_bytes": args.suffix_bytes,
            "machine": f"{platform.machine()} {torch.backends.cpu.get_cpu_capability()}", "load": os.getloadavg()[0],
            "command": "python -m evaluation.bench_memory " + " ".join(sys.argv[1:])}


def main(argv: list[str] | None = None) -> int:
    from diffusion_core.protocol import WEIGHTS_SCHEMES
    from lsp_server.settings import ContextSettings

    c = ContextSettings()
    ap = argparse.ArgumentParser(prog="python -m evaluation.bench_memory", description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="model folder or .gguf (default: the default model)")
    ap.add_argument("--weights", choices=WEIGHTS_SCHEMES, default="auto")
    ap.add_argument("--docs", type=int, default=500, help="documents, one completion each")
    ap.add_argument("--checkpoints", type=lambda s: sorted(int(x) for x in s.split(",")), default=[1, 20, 100, 250, 500])
    ap.add_argument("--baseline", type=int, default=20, help="the checkpoint growth is measured from (default 20)")
    ap.add_argument("--heldout", nargs="*", help="held-out corpus jsonl files (default: the set built at first use)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prefix-bytes", type=int, default=c.prefix_bytes, help="the editor's window before the hole")
    ap.add_argument("--suffix-bytes", type=int, default=c.suffix_bytes)
    args = ap.parse_args(argv)
    report = run(args)
    print(f"after load: {report['after_load']}; RSS growth from {report['baseline_documents']} to "
          f"{report['documents']} documents: {100 * report['growth_since_baseline']:.1f}%", file=sys.stderr)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
