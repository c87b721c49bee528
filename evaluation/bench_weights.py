"""How far each weights scheme moves the default model from float32: teacher-forced agreement.

Owns one measurement (issue 21, item 4's quick ranking): held-out code is run through the
model under float32 (the GGUF dequantized exactly) and under each packed scheme, one
forward per window; per scheme, the share of positions whose greedy next token equals
float32's (top-1 agreement: what decides a greedy fill, token by token), the mean KL
divergence of float32's next-token distribution to the scheme's, and the share of positions
where float32's token stays within the scheme's top 5. Thousands of positions, so differences
of a fraction of a point are visible, where 64 held-out fills are not. A table on stderr,
one JSON line last on stdout. Held-out files only (the validation split), never a benchmark's.

    python -m evaluation.bench_weights --weights auto,int4,int8 --windows 24 --tokens 512
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time


def windows(paths, n: int, tokens: int, tokenizer) -> list[list[int]]:
    """n windows of `tokens` ids from the held-out files, one per file, in file order."""
    from .heldout import load_files

    out = []
    for f in load_files(paths):
        ids = tokenizer.encode(f.text)
        if len(ids) >= tokens:
            out.append(ids[:tokens])
        if len(out) == n:
            break
    return out


def logits_of(model, ids: list[int]):
    import torch

    x = torch.tensor([ids])
    T = x.shape[1]
    mask = torch.ones(T, T, dtype=torch.bool).tril()[None, None]
    with torch.inference_mode():
        return model(x, torch.arange(T)[None], mask)[0].float()


def run(args) -> dict:
    import torch
    import torch.nn.functional as F

    from diffusion_core.loading.base_model import load_base

    from .bench_quality import first_use_heldout

    torch.set_num_threads(args.threads)
    paths = args.heldout or first_use_heldout("corpus")
    ref = load_base("cpu", torch.float32, weights="float32")
    wins = windows(paths, args.windows, args.tokens, ref.tokenizer)
    t0 = time.perf_counter()
    reference = [torch.log_softmax(logits_of(ref.model, w), -1) for w in wins]
    ref_s = time.perf_counter() - t0
    del ref
    results = {}
    for scheme in args.weights:
        lm = load_base("cpu", torch.float32, weights=scheme)
        agree = top5 = n = 0
        kl = 0.0
        t0 = time.perf_counter()
        for w, lp_ref in zip(wins, reference):
            lp = torch.log_softmax(logits_of(lm.model, w), -1)
            want = lp_ref.argmax(-1)
            agree += int((lp.argmax(-1) == want).sum())
            top5 += int((lp.topk(5, -1).indices == want[:, None]).any(-1).sum())
            kl += float(F.kl_div(lp, lp_ref, log_target=True, reduction="sum"))
            n += len(w)
        results[scheme] = {"weights": lm.weights, "positions": n, "top1_agreement": round(agree / n, 4),
                           "reference_in_top5": round(top5 / n, 4), "kl_mean": round(kl / n, 5),
                           "forward_s": round(time.perf_counter() - t0, 1)}
        print(f"{scheme:>8} {lm.weights:>16}: top-1 agreement {agree / n:.4f}, float32's token in top 5 "
              f"{top5 / n:.4f}, KL {kl / n:.5f} ({n} positions)", file=sys.stderr)
        del lm
    return {"bench": "weights", "reference": "float32", "windows": len(wins), "tokens": args.tokens,
            "reference_forward_s": round(ref_s, 1), "results": results, "threads": args.threads,
            "machine": f"{platform.machine()} {torch.backends.cpu.get_cpu_capability()}", "load": os.getloadavg()[0],
            "command": "python -m evaluation.bench_weights " + " ".join(sys.argv[1:])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m evaluation.bench_weights", description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=lambda s: s.split(","), default=["auto", "int4", "int8"])
    ap.add_argument("--windows", type=int, default=24, help="held-out files, one window each")
    ap.add_argument("--tokens", type=int, default=512, help="tokens per window")
    ap.add_argument("--heldout", nargs="*", help="held-out corpus jsonl files (default: the set built at first use)")
    ap.add_argument("--threads", type=int, default=2)
    print(json.dumps(run(ap.parse_args(argv))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
