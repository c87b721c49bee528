"""Latency benchmark of the denoising core: `diffill bench latency [--device cpu|cuda] [--json]`.

Contexts of 256, 1K, 4K and 16K tokens x holes of 16, 64 and 128 tokens, each cold (a
context never seen) and warm (the previous request's prefix extended by one keystroke,
so the exact cache re-encodes only the new tokens). Reports p50/p95 ms per request,
forward passes, tokens per forward, ms per step and memory; a table, then one JSON line.

By default it builds a ~20M-parameter model with random weights (the issue's reference
size). Random weights are never confident, so instead of the threshold rule (which would
commit one token per step) it runs LLaDA's fixed schedule at `--tokens-per-step` (4, what
threshold decoding commits per forward on a trained model); `--model DIR` benchmarks a
real folder with its default threshold rule instead.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import diffusion_core
from diffusion_core.generation.engine import Engine, HoleSpec
from diffusion_core.loading.loader import resolve_device, save_model
from diffusion_core.network.model import Transformer
from diffusion_core.generation.params import FillParams
from diffusion_core.protocol import percentile
from training.bpe import train_bpe

from .tiny_model import tiny_config

CONTEXTS = (256, 1024, 4096, 16384)
HOLES = (16, 64, 128)
BENCH_SHAPE = dict(hidden_size=512, num_hidden_layers=6, num_attention_heads=8, num_key_value_heads=2,
                   intermediate_size=1408, max_position_embeddings=32768, max_context=20000)


def source_text() -> str:
    """Real code to tokenize: the core's own sources, repeated as needed."""
    root = Path(diffusion_core.__file__).parent
    return "\n\n".join(p.read_text(encoding="utf-8") for p in sorted(root.rglob("*.py")))


def bench_model_dir(tmp: Path, text: str, vocab_size: int = 8192) -> Path:
    tok = train_bpe([text], vocab_size=vocab_size, min_frequency=2)
    tok.save(str(tmp / "tokenizer.json"))
    cfg = tiny_config(tok.get_vocab_size(), **BENCH_SHAPE)
    cfg.vocab_size = vocab_size  # the real tokenizer's size, even if this sample learnt fewer merges
    model = Transformer(cfg)
    model.init_weights(std=0.02, generator=torch.Generator().manual_seed(0))
    save_model(model, tmp)
    return tmp


def make_request(engine: Engine, ids: list[int], n_ctx: int) -> tuple[str, str]:
    """Prefix and suffix texts of about n_ctx tokens in all (3/4 before the hole)."""
    n_pre = n_ctx * 3 // 4
    reps = -(-(n_ctx + 8) // len(ids))
    ids = (ids * reps)[: n_ctx + 8]
    pre = engine.tokenizer.decode(ids[:n_pre])
    suf = engine.tokenizer.decode(ids[n_pre:n_ctx])
    return pre, suf


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_case(engine: Engine, pre: str, suf: str, budget: int, params: FillParams, repeats: int, warm: bool) -> dict:
    times, passes, tpf, step_ms, reused = [], [], [], [], []
    keystrokes = "x = value + 1  # typed"
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    for i in range(repeats + 1):  # the first run is a warm-up, excluded
        if warm:
            prefix = pre + keystrokes[: i % len(keystrokes) + 1]
            if i == 0:
                engine.fill([pre, suf], [HoleSpec(budget)], params)  # prime the cache
        else:
            engine.forget_contexts()  # cold: nothing cached
            prefix = pre + f"# request {i}\n"
        sync(engine.device)
        t0 = time.perf_counter()
        res = engine.fill([prefix, suf], [HoleSpec(budget)], params)
        sync(engine.device)
        if i == 0:
            continue
        times.append((time.perf_counter() - t0) * 1e3)
        st = res.stats
        passes.append(st.forward_passes)
        tpf.append(st.tokens_per_forward)
        step_ms.append(st.denoise_ms / max(1, st.forward_passes))
        reused.append(st.reused_tokens)
    times.sort()
    mem = torch.cuda.max_memory_allocated() / 2**20 if engine.device.type == "cuda" else \
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "p50_ms": percentile(times, 50),
        "p95_ms": percentile(times, 95),
        "forward_passes": statistics.median(passes),
        "tokens_per_forward": statistics.median(tpf),
        "ms_per_step": statistics.median(step_ms),
        "reused_tokens": statistics.median(reused),
        "peak_mem_mib": round(mem, 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="diffill bench latency", description=__doc__.split("\n")[0],
                                 epilog="example:\n  diffill bench latency --device cpu --contexts 256 1024 --holes 16 --json",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", type=Path, help="a model folder (default: a ~20M random model)")
    ap.add_argument("--contexts", type=int, nargs="+", default=list(CONTEXTS))
    ap.add_argument("--holes", type=int, nargs="+", default=list(HOLES))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tokens-per-step", type=int, default=4)
    ap.add_argument("--json", action="store_true", help="print only the JSON line")
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    text = source_text()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.model or bench_model_dir(Path(tmp), text)
        engine = Engine.load(folder, str(device))
    ids = engine.tokenizer.encode(text)
    rows = []
    for n_ctx in args.contexts:
        pre, suf = make_request(engine, ids, n_ctx)
        for budget in args.holes:
            if args.model:
                params = FillParams()
            else:
                params = FillParams(strategy="topk", steps=max(1, budget // args.tokens_per_step), block_size=32)
            for warm in (False, True):
                # Cold 16K encodes cost seconds on a CPU: fewer repeats there.
                reps = args.repeats if warm or n_ctx <= 4096 else max(2, args.repeats // 2)
                r = run_case(engine, pre, suf, budget, params, reps, warm)
                r.update(context=n_ctx, hole=budget, cache="warm" if warm else "cold")
                rows.append(r)
                print(f"  ctx {n_ctx:>6} hole {budget:>4} {r['cache']:<4} p50 {r['p50_ms']:8.1f} ms", file=sys.stderr, flush=True)
    info = engine.info()
    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads" if device.type == "cpu" \
        else torch.cuda.get_device_name(device)
    if not args.json:
        print(f"model {info['model']} ({info['parameters'] / 1e6:.1f}M params, {info['dtype']}) on {machine}")
        print(f"{'context':>8} {'hole':>5} {'cache':>5} {'p50 ms':>9} {'p95 ms':>9} {'passes':>7} {'tok/fwd':>8} {'ms/step':>8} {'reused':>7} {'mem MiB':>8}")
        for r in rows:
            print(f"{r['context']:>8} {r['hole']:>5} {r['cache']:>5} {r['p50_ms']:>9.1f} {r['p95_ms']:>9.1f} {r['forward_passes']:>7.0f} "
                  f"{r['tokens_per_forward']:>8.2f} {r['ms_per_step']:>8.2f} {r['reused_tokens']:>7.0f} {r['peak_mem_mib']:>8.0f}")
    print(json.dumps({"bench": "diffusion_core", "device": str(device), "machine": machine, "model": info, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
