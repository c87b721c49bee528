"""Service benchmark: completions/s and p50/p95 latency at several numbers of concurrent
editors, with the scheduler batching steps across requests and without.

Owns: the load generator (N asyncio editors, each sending fills one after another
through its own CoreClient connection to one shared core subprocess) and the report.

Must not know: the engine's internals; it talks to the core only over the protocol,
as the LSP server does.

    diffill bench service [--model DIR] [--device cpu] [--clients 1,4,16]

Prints a table, then one JSON line last. Without --model it builds a random model of
--size (``tiny`` | ``bench``) in a temporary folder: the figures measure scheduling
and batching, not completion quality.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time

from diffusion_core.protocol import percentile

# Random-model shapes: hidden, layers, heads, kv heads, MLP width.
SIZES = {
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=128),
    "bench": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=4,
                  intermediate_size=704),
}

WORDS = "def return self value total index items result count name data path line node".split()


def synthetic_request(editor: int, k: int, context_words: int, budget: int) -> tuple[list[str], list[int]]:
    """Editor ``editor`` typing its k-th keystroke into its own document: the context of
    request k extends that of request k-1 by one character, as in an editor."""
    body = " ".join(WORDS[(editor * 7 + i) % len(WORDS)] for i in range(context_words))
    typed = "total_value_of_items"[: k % 20]
    prefix = f"# editor {editor}\ndef f_{editor}(x):\n    {body}\n    return {typed}"
    return [prefix, "\n\nprint(f(1))\n"], [budget]


async def run_level(address: str, editors: int, per_editor: int, args: argparse.Namespace) -> dict:
    from lsp_server.core_client import CoreClient

    clients = [CoreClient(address=address) for _ in range(editors)]
    await asyncio.gather(*(c.start() for c in clients))
    params = {"strategy": "topk", "steps": args.steps}
    latencies: list[float] = []
    batches: list[int] = []
    passes: list[int] = []
    encode_ms: list[float] = []

    async def editor(i: int, client) -> None:
        for k in range(per_editor):
            segments, budgets = synthetic_request(i, k, args.context_words, args.budget)
            t0 = time.perf_counter()
            reply = await client.fill(segments, budgets, params, request_id=f"bench-{i}-{k}")
            latencies.append((time.perf_counter() - t0) * 1e3)
            batches.append(reply["stats"].get("batch", 1))
            encode_ms.append(reply["stats"].get("encode_ms", 0.0))
            passes.append(reply["stats"].get("forward_passes", 0))

    t0 = time.perf_counter()
    await asyncio.gather(*(editor(i, c) for i, c in enumerate(clients)))
    wall = time.perf_counter() - t0
    await asyncio.gather(*(c.close() for c in clients))
    return {
        "clients": editors,
        "requests": len(latencies),
        "completions_per_s": round(len(latencies) / wall, 2),
        "p50_ms": round(percentile(latencies, 50), 1),
        "p95_ms": round(percentile(latencies, 95), 1),
        "mean_batch": round(statistics.fmean(batches), 2),
        "forward_passes": round(statistics.fmean(passes), 1),
        "encode_ms_p50": round(percentile(encode_ms, 50), 1),
    }


async def run_mode(batched: bool, model_dir: str, args: argparse.Namespace) -> tuple[list[dict], dict]:
    from lsp_server.core_client import CoreClient

    core_args = ["--max-batch", str(args.max_batch), "--max-queue", "1024", "--max-per-client", "64",
                 "--log-level", "WARNING"]
    if args.threads:
        core_args += ["--threads", str(args.threads)]
    if not batched:
        core_args.append("--no-batch")
    owner = CoreClient(model_dir=model_dir, device=args.device, core_args=core_args, start_timeout=300)
    await owner.start()
    try:
        address = owner.endpoint
        await run_level(address, 2, 2, args)  # warm-up, not reported
        rows = []
        for editors in args.clients:
            per_editor = max(1, args.requests // editors)
            row = await run_level(address, editors, per_editor, args)
            row["mode"] = "batched" if batched else "unbatched"
            rows.append(row)
            print(f"  {row['mode']:<9} {editors:>3} editors done", file=sys.stderr, flush=True)
        info = (await owner.status())["info"]
    finally:
        await owner.close()
    for row in rows:
        row["device"] = info.get("device")
    return rows, info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="diffill bench service", description=__doc__.split("\n\n")[0],
                                epilog="example:\n  diffill bench service --size tiny --clients 1,4 --requests 16",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model folder (default: a random model of --size)")
    p.add_argument("--size", choices=sorted(SIZES), default="tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--clients", default="1,4,16", help="comma-separated numbers of concurrent editors")
    p.add_argument("--requests", type=int, default=32, help="requests per level (split across editors)")
    p.add_argument("--budget", type=int, default=16, help="tokens per hole")
    p.add_argument("--steps", type=int, default=8, help="denoising steps per request (topk)")
    p.add_argument("--context-words", type=int, default=60, help="words of context before the hole")
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--threads", type=int, default=0, help="torch threads in the core (0: default)")
    p.add_argument("--modes", default="batched,unbatched")
    args = p.parse_args(argv)
    args.clients = [int(c) for c in args.clients.split(",")]

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model
        if model_dir is None:
            from .tiny_model import make_tiny_model

            model_dir = str(make_tiny_model(os.path.join(tmp, "model"), **SIZES[args.size]))
        rows, info = [], {}
        for mode in args.modes.split(","):
            mode_rows, info = asyncio.run(run_mode(mode == "batched", model_dir, args))
            rows += mode_rows

    print(f"model {info.get('model')} ({info.get('parameters')} parameters) on {info.get('device')}; "
          f"{args.budget}-token hole, {args.steps} steps, ~{args.context_words} words of context")
    header = f"{'mode':<10}{'editors':>8}{'req':>6}{'compl/s':>10}{'p50 ms':>10}{'p95 ms':>10}{'batch':>8}{'fwd':>6}{'enc ms':>8}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['mode']:<10}{r['clients']:>8}{r['requests']:>6}{r['completions_per_s']:>10}{r['p50_ms']:>10}"
              f"{r['p95_ms']:>10}{r['mean_batch']:>8}{r['forward_passes']:>6}{r['encode_ms_p50']:>8}")
    speedup = {}
    by = {(r["mode"], r["clients"]): r for r in rows}
    for c in args.clients:
        if ("batched", c) in by and ("unbatched", c) in by:
            speedup[str(c)] = round(by[("batched", c)]["completions_per_s"] / by[("unbatched", c)]["completions_per_s"], 2)
    if speedup:
        print("batched / unbatched throughput: " + ", ".join(f"{c} editors x{s}" for c, s in speedup.items()))
    print(json.dumps({
        "bench": "service", "machine": platform.machine(), "cpus": os.cpu_count(), "model": info,
        "budget": args.budget, "steps": args.steps, "context_words": args.context_words,
        "command": " ".join(["diffill bench service"] + (argv if argv is not None else sys.argv[1:])),
        "rows": rows, "throughput_speedup": speedup,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
