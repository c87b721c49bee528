"""Context tokens each editor event makes the core encode, per FIM layout (issue 25 item 1).

    diffill bench context-reuse [--file F] [--places 10] [--keys 12] [--orders psm,spm-variant]

Owns: replaying an editor session over a real file (default: the standard library's
``textwrap.py``, which no one here wrote) through the server's own context window
(``lsp_server.pipeline``: plan, grid-aligned prefix window, suffix window) and the
default model's tokenizer and FIM frame (``infill_formats.causal_context``), and counting
for every request the context tokens the engine would have to encode: the context minus
the longest prefix it shares with one of the engine's stored contexts (the engine's own
rule: ``CONTEXT_STORE_SIZE`` contexts, longest common prefix). No model runs: the count
is exact for the engine's cache and cheap enough for every layout.

Events: *key* (a character typed at the cursor), *move* (the cursor to another line
of the same function, 1-4 lines up or down), *jump* (to another place in the file), each
followed by its request. Layouts: each FIM order, and each with a llama.vim-style block of
extra context before the frame (``--extra-bytes`` of the file's start, the same for every
request, so it is reused across moves and jumps; its quality is not measured here).

Prints a table, then one JSON line. Must not know: LSP transport, the scheduler.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import textwrap
from pathlib import Path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="diffill bench context-reuse", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="example:\n  diffill bench context-reuse --places 10 --keys 12")
    p.add_argument("--file", type=Path, default=Path(textwrap.__file__))
    p.add_argument("--places", type=int, default=10, help="places jumped to")
    p.add_argument("--keys", type=int, default=12, help="keys typed at each place and after each move")
    p.add_argument("--orders", default="psm,spm-variant")
    p.add_argument("--extra-bytes", type=int, default=1500, help="the extra-context block's size (0: none)")
    p.add_argument("--model", default=None, help="model whose tokenizer counts (default: the default model)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def events(lines: list[str], places: int, keys: int, rng: random.Random) -> list[tuple[str, int, str]]:
    """(kind, line, text typed at that line's indentation) per request, in order."""
    from evaluation.bench_typing import typed_line_numbers

    out = []
    for n, ln in enumerate(typed_line_numbers(lines, places)):
        for kind, line in (("jump" if n else "open", ln), ("move", max(0, ln + rng.choice((-4, -3, -2, 2, 3, 4))))):
            target = lines[line].strip() or "x = 1"
            out.append((kind, line, ""))
            for k in range(1, min(keys, len(target)) + 1):
                out.append(("key", line, target[:k]))
    return out


class Store:
    """The engine's context store: up to CONTEXT_STORE_SIZE contexts, longest common prefix."""

    def __init__(self, size: int):
        self.size, self.entries = size, []

    def encode(self, ids: list[int]) -> int:
        best, best_i = 0, None
        for i, e in enumerate(self.entries):
            n = 0
            for a, b in zip(e, ids):
                if a != b:
                    break
                n += 1
            if n > best:
                best, best_i = n, i
        if best_i is not None and 2 * best >= len(self.entries[best_i]):
            self.entries.pop(best_i)  # reused in place: it becomes this context
        self.entries.append(ids)
        del self.entries[: max(0, len(self.entries) - self.size)]
        return len(ids) - best


def context_ids(engine, lines: list[str], line: int, typed: str, order: str, extra: list[int], settings) -> list[int]:
    from diffusion_core.tokens.infill_formats import causal_context
    from grammars.document import Document
    from lsp_server.pipeline import window_segments

    src = list(lines)
    indent = src[line][: len(src[line]) - len(src[line].lstrip())]
    src[line] = indent + typed
    doc = Document("\n".join(src) + "\n", language_id="python")
    cursor = doc.offset_at(line, len(src[line]), encoding="utf-32")
    prefix, suffix = window_segments(doc.source, cursor, cursor, settings)
    tok = engine.tokenizer
    ctx = causal_context(tok.encode(prefix), tok.encode(suffix), tok.special, order)[:-1]
    return extra + ctx


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from diffusion_core.generation.engine import CONTEXT_STORE_SIZE, Engine
    from lsp_server.settings import Settings

    engine = Engine.load(args.model, device="cpu")
    settings = Settings()
    lines = args.file.read_text(encoding="utf-8").splitlines()
    evs = events(lines, args.places, args.keys, random.Random(args.seed))
    layouts = []
    for order in args.orders.split(","):
        layouts.append((order, order, []))
        if args.extra_bytes:
            block = engine.tokenizer.encode("\n".join(lines)[: args.extra_bytes])
            layouts.append((f"{order} + extra block", order, block))
    rows = []
    for name, order, extra in layouts:
        store = Store(CONTEXT_STORE_SIZE)
        per: dict[str, list[int]] = {}
        sizes = []
        for kind, line, typed in evs:
            ids = context_ids(engine, lines, line, typed, order, extra, settings)
            per.setdefault(kind, []).append(store.encode(ids))
            sizes.append(len(ids))
        row = {"layout": name, "context_p50": int(statistics.median(sizes))}
        for kind in ("key", "move", "jump"):
            v = per.get(kind, [0])
            row[f"{kind}_p50"] = int(statistics.median(v))
            row[f"{kind}_mean"] = round(statistics.fmean(v), 1)
        rows.append(row)
    print(f"context tokens encoded per event ({len(evs)} requests over {args.file}, "
          f"prefix {settings.context.prefix_bytes} / suffix {settings.context.suffix_bytes} bytes)")
    print(f"{'layout':28} {'context':>8} {'key p50/mean':>14} {'move p50/mean':>15} {'jump p50/mean':>15}")
    for r in rows:
        print(f"{r['layout']:28} {r['context_p50']:>8} {r['key_p50']:>6}/{r['key_mean']:<7} "
              f"{r['move_p50']:>6}/{r['move_mean']:<8} {r['jump_p50']:>6}/{r['jump_mean']:<8}")
    print(json.dumps({"bench": "context_reuse", "file": str(args.file), "requests": len(evs),
                      "model": engine.info().get("model"), "python": platform.python_version(), "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
