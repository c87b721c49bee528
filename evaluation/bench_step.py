"""Where one decode step's time goes, on the default model (issue 13, item 5).

Owns one measurement: a causal-layout step as the engine runs it -- R new rows (1 = AR-exact;
1 + drafts + mask rows for lossless) over a cached context of C tokens -- timed whole, and
split by torch's profiler into the layers' weight matmuls, the LM head, attention, and the
rest (norms, RoPE, cache writes, casts), beside the floor set by reading the weights once at
the machine's measured memory bandwidth. Also the two host-side costs a step pays after the
forward: the fp32 copy of the logits and the sampler. A table on stderr, one JSON line last.

    diffill bench step --context 1600 --rows 1,4,9,16 --weights float32,auto,int4,int8
    python -m evaluation.bench_step ...     (the same; the JSON's "command" names this form)

`--model DIR` times a model folder instead (the smoke test's tiny one); figures that go into
docs come from the default model.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path


def _classify(name: str, shapes) -> str:
    if name in ("aten::mm", "aten::addmm", "aten::linear", "aten::matmul", "aten::bmm",
                "aten::_weight_int4pack_mm_for_cpu", "aten::_weight_int8pack_mm"):
        flat = [d for s in shapes or [] for d in (s or [])]
        return "lm head" if any(d > 100_000 for d in flat) else "layer matmuls"
    if "scaled_dot_product" in name or "_flash_attention" in name or name == "aten::_softmax":
        return "attention"
    return "other"


def bandwidth_gbs() -> float:
    """GB/s of a large copy on this machine (the floor's denominator)."""
    import torch

    a = torch.empty(256 * 1024 * 1024 // 4)
    b = torch.empty_like(a)
    times = []
    for _ in range(5):
        t = time.perf_counter()
        b.copy_(a)
        times.append(time.perf_counter() - t)
    return 2 * a.numel() * 4 / min(times) / 1e9  # read + write


def _weight_bytes(model) -> int:
    """Bytes a step reads for the weights: parameters and packed buffers, less the embedding table."""
    total = 0
    for name, mod in model.named_modules():
        if name == "embed_tokens":
            continue
        for t in list(mod.parameters(recurse=False)) + list(mod.buffers(recurse=False)):
            if t.dim() >= 1 and t.numel() > 1024:
                total += t.numel() * t.element_size()
    return total


def run_one(args, weights: str) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from diffusion_core.loading.base_model import load_base
    from diffusion_core.tokens.layout import attention_mask
    from diffusion_core.loading.loader import load_model
    from diffusion_core.network.model import Segment
    from diffusion_core.generation.params import FillParams
    from diffusion_core.generation.sampler import sample_tokens

    if args.model:
        loaded = load_model(args.model, "cpu", torch.float32, weights=weights)
    else:
        loaded = load_base("cpu", torch.float32, weights=weights)
    model = loaded.model
    vocab = min(150_000, loaded.config.vocab_size)  # random ids: any token of the vocabulary
    weight_bytes = _weight_bytes(model)
    gbs = bandwidth_gbs()
    C = args.context
    ids = torch.randint(0, vocab, (C,))
    cache = model.new_cache(C + 512)
    with torch.inference_mode():
        model.forward_packed(ids, torch.arange(C), [Segment(0, C, cache, "append", attention_mask("causal", 0, 0, C, C))],
                             torch.tensor([C - 1]))
    results = {}
    for R in args.rows:
        new = torch.randint(0, vocab, (R,))

        def step():
            seg = Segment(0, R, cache, "append", attention_mask("causal", 0, C, R, C + R))
            out = model.forward_packed(new, torch.arange(C, C + R), [seg], torch.arange(R))
            cache.truncate(C)
            return out

        with torch.inference_mode():
            for _ in range(2):
                step()
            walls = []
            for _ in range(args.reps):
                t = time.perf_counter()
                logits = step()
                walls.append((time.perf_counter() - t) * 1e3)
            t = time.perf_counter()
            lf = logits.float().cpu()
            copy_ms = (time.perf_counter() - t) * 1e3
            t = time.perf_counter()
            sample_tokens(lf, FillParams(strategy="lossless"), None, (0, 1, 2))
            sample_ms = (time.perf_counter() - t) * 1e3
            with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
                step()
        parts = {"layer matmuls": 0.0, "lm head": 0.0, "attention": 0.0, "other": 0.0}
        for ev in prof.key_averages(group_by_input_shape=True):
            parts[_classify(ev.key, ev.input_shapes)] += ev.self_cpu_time_total / 1e3
        total = sum(parts.values()) or 1.0
        wall = statistics.median(walls)
        results[R] = {"wall_p50_ms": round(wall, 1), "floor_ms": round(weight_bytes / gbs / 1e6, 1),
                      **{f"{k} %": round(100 * v / total, 1) for k, v in parts.items()},
                      "logits copy ms": round(copy_ms, 2), "sampler ms": round(sample_ms, 2)}
    prefill = {}
    for T in args.prefill:
        chunk = torch.randint(0, vocab, (T,))
        with torch.inference_mode():
            walls = []
            for _ in range(max(2, args.reps // 2) + 1):
                seg = Segment(0, T, cache, "append", attention_mask("causal", 0, C, T, C + T))
                t = time.perf_counter()
                model.forward_packed(chunk, torch.arange(C, C + T), [seg], torch.empty(0, dtype=torch.long))
                walls.append(time.perf_counter() - t)
                cache.truncate(C)
        prefill[T] = round(T / statistics.median(walls[1:]), 1)
    return {"weights": loaded.weights, "weight_mb": round(weight_bytes / 1e6), "bandwidth_gbs": round(gbs, 1),
            "results": results, "prefill_tokens_per_s": prefill}


def run(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    runs = {w: run_one(args, w) for w in args.weights}
    model = Path(args.model).name if args.model else "Qwen2.5-Coder-0.5B"
    return {"bench": "step", "model": model, "threads": args.threads, "context": args.context,
            "machine": f"{platform.machine()} {platform.processor() or ''} {torch.backends.cpu.get_cpu_capability()}".strip(),
            "load": os.getloadavg()[0],
            "command": "python -m evaluation.bench_step " + " ".join(sys.argv[1:]), "runs": runs}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="diffill bench step", description=__doc__.splitlines()[0],
                                 epilog="example:\n  diffill bench step --context 600 --rows 1,4,8,16 --reps 5 --threads 2",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="a model folder or .gguf (default: the default model from its weight wheels)")
    ap.add_argument("--context", type=int, default=1600, help="cached context tokens")
    ap.add_argument("--rows", type=lambda s: [int(x) for x in s.split(",")], default=[1, 9, 16],
                    help="new rows per step, comma-separated")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--weights", type=lambda s: s.split(","), default=["float32", "auto"],
                    help="weights schemes to compare, comma-separated (auto, int4, int8, float32)")
    ap.add_argument("--prefill", type=lambda s: [int(x) for x in s.split(",") if x], default=[64, 128, 256],
                    help="prefill chunk sizes to time (tokens per second), comma-separated; '' for none")
    args = ap.parse_args(argv)
    report = run(args)
    keys = ["wall_p50_ms", "floor_ms", "layer matmuls %", "lm head %", "attention %", "other %", "logits copy ms", "sampler ms"]
    print(f"{'weights':>16}{'rows':>5}" + "".join(f"{k:>17}" for k in keys), file=sys.stderr)
    for w, one in report["runs"].items():
        for R, r in one["results"].items():
            print(f"{one['weights']:>16}{R:>5}" + "".join(f"{r[k]:>17}" for k in keys), file=sys.stderr)
    print(f"{'weights':>16}" + "".join(f"{'prefill ' + str(T) + ' tok/s':>20}" for T in args.prefill), file=sys.stderr)
    for w, one in report["runs"].items():
        print(f"{one['weights']:>16}" + "".join(f"{v:>20}" for v in one["prefill_tokens_per_s"].values()), file=sys.stderr)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
