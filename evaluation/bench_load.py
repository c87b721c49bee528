"""Load-time benchmark of a GGUF model: cold conversion into the cache, then warm loads.

    python -m evaluation.bench_load [--gguf FILE] [--warm 3] [--dtype bf16 fp32]

Owns: timing `loader.load_model` in fresh processes (each a subprocess, so nothing is
already imported or mapped): per dtype, one cold load into an empty temporary
`XDG_CACHE_HOME` (hashing plus conversion into that dtype's cached copy), then `--warm`
loads from it. Without `--gguf` it times the default model from its registry wheels.
Prints a table, then one JSON line last: seconds and peak RSS per step, and the machine.
The temporary caches are removed.

Must not know: GGUF internals (it only calls the loader).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile

# Run in the child: one load, timed from the interpreter's start (imports included).
CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import torch
from diffusion_core.loading.base_model import load_base
from diffusion_core.loading.loader import load_model
dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[sys.argv[2]]
t1 = time.perf_counter()
if sys.argv[1] == "-":
    lm = load_base("cpu", dtype)
else:
    lm = load_model(sys.argv[1], "cpu", dtype)
t2 = time.perf_counter()
print(json.dumps({"load_s": t2 - t1, "process_s": t2 - t0,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}))
"""


def run_child(gguf: str, dtype: str, env: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, gguf, dtype], env=env, capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"bench_load: the load failed: {out.stderr.strip().splitlines()[-1] if out.stderr else out.returncode}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="diffill bench load", description=__doc__.split("\n\n")[0],
                                 epilog="example:\n  diffill bench load --warm 2 --dtype fp32",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", default="-", help="a .gguf file (default: the base model's registry wheels)")
    ap.add_argument("--warm", type=int, default=3, help="warm loads per dtype")
    ap.add_argument("--dtype", nargs="+", default=["bf16", "fp32"], choices=["bf16", "fp32"])
    args = ap.parse_args(argv)
    rows = []
    for dtype in args.dtype:
        cache = tempfile.mkdtemp(prefix="diffill-bench-load-")
        env = {**os.environ, "XDG_CACHE_HOME": cache}
        try:
            rows.append({"step": f"cold ({dtype}): hash + convert + load", **run_child(args.gguf, dtype, env)})
            runs = [run_child(args.gguf, dtype, env) for _ in range(args.warm)]
            rows.append({"step": f"warm ({dtype}), median of {args.warm}",
                         "load_s": statistics.median(r["load_s"] for r in runs),
                         "process_s": statistics.median(r["process_s"] for r in runs),
                         "rss_mb": max(r["rss_mb"] for r in runs)})
        finally:
            shutil.rmtree(cache, ignore_errors=True)
    print(f"{'step':44} {'load s':>8} {'process s':>10} {'peak RSS MB':>12}")
    for r in rows:
        print(f"{r['step']:44} {r['load_s']:8.2f} {r['process_s']:10.2f} {r['rss_mb']:12d}")
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
               "load_average": [round(x, 2) for x in os.getloadavg()]}
    print(json.dumps({"gguf": args.gguf, "rows": [{k: round(v, 2) if isinstance(v, float) else v for k, v in r.items()}
                                                  for r in rows], "machine": machine}))


if __name__ == "__main__":
    main()
