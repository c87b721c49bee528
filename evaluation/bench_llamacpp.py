"""The llama.cpp peer alone on the decoding benchmark's held-out holes: its latency and quality.

Owns one measurement: the holes `python -m evaluation.decoding --n N --seed S` fills (same
`heldout.sample_holes` call, same kinds and seed), each asked of `peer_llamacpp.LlamaCppPeer`
with the same context window (`segments_at` under the editor's context settings, unless
--prefix-bytes / --suffix-bytes say otherwise) and stop rule (`decoding.stop_spec`). Per
kind: p50/p95 ms, time to the first token, prompt eval ms and tokens, reused prompt tokens,
ms per decoded token, how the fills ended, exact match / edit similarity after `finalize`;
and, when diffill converted the default model already, how many prompts are token for token
the ones diffill's tokenizer builds. A human table on stderr and one JSON line last on stdout.
The side-by-side with diffill's modes is `python -m evaluation.decoding --modes ar,llama.cpp`.

    diffill bench llamacpp --n 8 --threads 2        (or python -m evaluation.bench_llamacpp)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from diffusion_core.tokens.infill_formats import CAUSAL_MAX_CONTEXT, FIM_TOKENS

from .decoding import add_hole_args, heldout_holes, percentile, stop_spec, window_settings
from .peer_llamacpp import N_CTX, LlamaCppPeer, default_gguf_file, prompt_ids


def diffill_prompt(tokenizer_json: Path) -> Callable[[str, str], list[int]]:
    """diffill's prompt ids of (prefix, suffix), from its converted model's tokenizer.json
    (to check that llama.cpp is asked the same thing, token for token)."""
    from tokenizers import Tokenizer

    from diffusion_core.tokens.textcut import cut_segments

    tok = Tokenizer.from_file(str(tokenizer_json))
    tok.encode_special_tokens = True  # as diffusion_core.tokens.tokenizer: marker text in code stays text
    marks = {role: tok.token_to_id(FIM_TOKENS[role]) for role in ("pre", "suf", "mid")}

    def ids(prefix: str, suffix: str) -> list[int]:
        p, s = (e.ids for e in tok.encode_batch(cut_segments([prefix, suffix], CAUSAL_MAX_CONTEXT),
                                                 add_special_tokens=False))
        return prompt_ids(p, s, marks)
    return ids


def _default_tokenizer_json() -> Path | None:
    """The default model's converted tokenizer.json, if a diffill run converted it already."""
    import torch

    from diffusion_core.loading.base_model import BASE_SHA256
    from diffusion_core.loading.model_cache import model_dir

    found = [d / "tokenizer.json" for d in (model_dir(BASE_SHA256, torch.float32), model_dir(BASE_SHA256))
             if (d / "tokenizer.json").is_file()]
    return found[0] if found else None


def run(args) -> dict:
    from grammars.postprocess import finalize
    from lsp_server.pipeline import segments_at

    from . import metrics as M

    gguf = Path(args.gguf) if args.gguf else default_gguf_file()
    t0 = time.perf_counter()
    peer = LlamaCppPeer(gguf, threads=args.threads, n_ctx=args.n_ctx, prompt_cache=not args.no_prompt_cache)
    load_s = time.perf_counter() - t0
    holes = heldout_holes(args.heldout, args.n, args.seed)  # the same holes as evaluation.decoding
    settings = window_settings(args)
    peer.fill("def f(x):\n    return ", "\n", 4, single_line=True)  # warm-up, as evaluation.decoding
    tok_json = None if args.gguf else _default_tokenizer_json()
    theirs = diffill_prompt(tok_json) if tok_json else None
    same_prompt: list[bool] = []
    rows: dict[str, list[dict]] = {}
    for i, hole in enumerate(holes):
        segs = segments_at(hole.doc, hole.plan, settings)
        assert len(segs) == 2, "one plan: the text before and after its hole"
        spec = stop_spec(hole.plan, min(hole.plan.budget, args.max_budget))
        if theirs is not None:  # outside the timed fill
            same_prompt.append(peer.prompt(segs[0], segs[1], spec.budget) == theirs(segs[0], segs[1]))
        text, st = peer.fill(segs[0], segs[1], spec.budget, max_lines=spec.max_lines,
                             dedent_below=spec.dedent_below, min_depth=spec.min_depth)
        shown = finalize(hole.doc, hole.plan, text)
        rows.setdefault(hole.kind, []).append(dict(asdict(st), em=M.exact_match(shown, hole.truth),
                                                   es=M.edit_similarity(shown, hole.truth)))
        print(f"hole {i + 1}/{len(holes)} {hole.kind}: {st.ms:.0f} ms, prompt {st.prompt_eval_tokens}/{st.prompt_tokens} "
              f"tok {st.prompt_ms:.0f} ms, {st.tokens} tok ({st.ended})", file=sys.stderr)
    summary = {}
    for kind, rs in rows.items():
        gen = sum(r["forwards"] - 1 for r in rs)
        summary[kind] = dict(
            fills=len(rs), p50_ms=round(percentile([r["ms"] for r in rs], 0.5), 1),
            p95_ms=round(percentile([r["ms"] for r in rs], 0.95), 1),
            first_token_p50_ms=round(percentile([r["first_token_ms"] for r in rs], 0.5), 1),
            prompt_p50_ms=round(percentile([r["prompt_ms"] for r in rs], 0.5), 1),
            prompt_tokens_mean=round(M.mean([r["prompt_tokens"] for r in rs]), 1),
            reused_mean=round(M.mean([r["reused_tokens"] for r in rs]), 1),
            tokens_mean=round(M.mean([r["tokens"] for r in rs]), 2),
            ms_per_decode_token=round(sum(r["decode_ms"] for r in rs) / gen, 1) if gen else 0.0,
            ended={w: sum(r["ended"] == w for r in rs) for w in ("end", "stop", "budget", "stream")},
            exact_match=round(M.mean([float(r["em"]) for r in rs]), 3),
            edit_similarity=round(M.mean([r["es"] for r in rs]), 3))
    from importlib.metadata import version

    return dict(bench="llamacpp", peer=f"llama-cpp-python {version('llama-cpp-python')}", gguf=gguf.name,
                **peer.info(), load_s=round(load_s, 1), holes=len(holes),
                machine=f"{platform.machine()} {platform.processor() or ''}".strip(), cpus=os.cpu_count(),
                prompts_same_as_diffill=f"{sum(same_prompt)}/{len(same_prompt)}" if theirs else None,
                prefix_bytes=settings.context.prefix_bytes, suffix_bytes=settings.context.suffix_bytes,
                command="python -m evaluation.bench_llamacpp " + " ".join(sys.argv[1:]), results=summary)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="diffill bench llamacpp", description=__doc__.splitlines()[0],
                                 epilog="example:\n  diffill bench llamacpp --n 8 --threads 2",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", help="a .gguf file (default: the default model's parts, joined once into the cache)")
    add_hole_args(ap)
    ap.add_argument("--n-ctx", type=int, default=N_CTX)
    ap.add_argument("--no-prompt-cache", action="store_true", help="evaluate every prompt from its first token")
    args = ap.parse_args(argv)
    report = run(args)
    print(f"{'kind':<14}{'p50 ms':>8}{'p95 ms':>8}{'1st p50':>8}{'prompt':>8}{'ptok':>6}{'reused':>7}{'tok':>6}"
          f"{'ms/tok':>7}{'EM':>6}{'ES':>6}", file=sys.stderr)
    for k, r in report["results"].items():
        print(f"{k:<14}{r['p50_ms']:>8.0f}{r['p95_ms']:>8.0f}{r['first_token_p50_ms']:>8.0f}{r['prompt_p50_ms']:>8.0f}"
              f"{r['prompt_tokens_mean']:>6.0f}{r['reused_mean']:>7.0f}{r['tokens_mean']:>6.1f}"
              f"{r['ms_per_decode_token']:>7.1f}{r['exact_match']:>6.2f}{r['edit_similarity']:>6.2f}", file=sys.stderr)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
