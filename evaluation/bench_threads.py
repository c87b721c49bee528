"""Torch's thread count for the core, measured on a quiet and on a busy CPU.

    diffill bench threads [--model PATH | --tiny] [--context 512] [--tokens 16] [--repeat 2]

Owns: timing what a completion costs the core (a cold context encode of ``--context``
tokens, then ``--tokens`` AR decode steps) at each thread count from 1 to the CPU count,
once with the machine as it is ("quiet") and once beside ``--hogs`` busy-loop processes
("busy": another build or test run on the same cores). The core's ``--threads`` default
(``diffusion_core.generation.threads.auto_threads``) was chosen from this table.

Prints a table, then one JSON line last. Must not know: LSP, the scheduler.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="diffill bench threads", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="example:\n  diffill bench threads --context 512 --tokens 12 --repeat 2")
    p.add_argument("--model", default=None, help="model folder or .gguf (default: Qwen2.5-Coder-0.5B)")
    p.add_argument("--tiny", action="store_true", help="a tiny random model (smoke run, not a figure)")
    p.add_argument("--context", type=int, default=512, help="context tokens encoded cold per run")
    p.add_argument("--tokens", type=int, default=16, help="tokens decoded per run")
    p.add_argument("--repeat", type=int, default=2, help="runs per cell (median reported; a warm-up run first)")
    p.add_argument("--hogs", type=int, default=1, help="busy-loop processes for the busy rows")
    p.add_argument("--max-threads", type=int, default=0, help="largest thread count (0: the CPU count)")
    return p.parse_args(argv)


def _hog(stop) -> None:  # a CPU-bound neighbour
    x = 0
    while not stop.is_set():
        x = (x * 31 + 7) % 1000003


def _run(engine, text: str, tokens: int) -> tuple[float, float]:
    """(encode ms, decode ms per token) of one cold fill."""
    from diffusion_core.generation.engine import FillParams, HoleSpec

    engine.forget_contexts()
    res = engine.fill([text, "\n"], [HoleSpec(budget=tokens)], FillParams(strategy="ar"))
    st = res.stats
    return st.encode_ms, st.denoise_ms / max(1, st.forward_passes)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from diffusion_core.generation.engine import Engine

    if args.tiny:
        from .tiny_model import make_tiny_model

        folder = tempfile.mkdtemp(prefix="diffill-threads-")
        make_tiny_model(folder)
        engine = Engine.load(folder, device="cpu")
    else:
        engine = Engine.load(args.model, device="cpu")
    # Source text until the context holds about --context tokens.
    import textwrap as tw

    source = open(tw.__file__, encoding="utf-8").read()
    ids = engine.tokenizer.encode(source)
    text = engine.tokenizer.decode(ids[: args.context])
    cpus = os.cpu_count() or 1
    counts = list(range(1, (args.max_threads or cpus) + 1))
    rows = []
    for condition in ("quiet", "busy"):
        stop = multiprocessing.Event()
        hogs = [multiprocessing.Process(target=_hog, args=(stop,), daemon=True)
                for _ in range(args.hogs if condition == "busy" else 0)]
        for h in hogs:
            h.start()
        try:
            for n in counts:
                torch.set_num_threads(n)
                _run(engine, text, 2)  # warm-up at this thread count
                runs = [_run(engine, text, args.tokens) for _ in range(args.repeat)]
                rows.append({"condition": condition, "threads": n, "load": round(os.getloadavg()[0], 2),
                             "encode_ms": round(statistics.median(r[0] for r in runs), 1),
                             "decode_ms_per_token": round(statistics.median(r[1] for r in runs), 1)})
        finally:
            stop.set()
            for h in hogs:
                h.join(5)
    print(f"{'condition':9} {'threads':>7} {'load':>5} {'encode ms':>10} {'decode ms/token':>16}")
    for r in rows:
        print(f"{r['condition']:9} {r['threads']:>7} {r['load']:>5} {r['encode_ms']:>10} {r['decode_ms_per_token']:>16}")
    print(json.dumps({"bench": "threads", "model": engine.info().get("model"), "context": args.context,
                      "tokens": args.tokens, "cpus": cpus, "hogs": args.hogs, "python": platform.python_version(),
                      "torch": torch.__version__, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
