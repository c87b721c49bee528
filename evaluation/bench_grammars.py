"""Benchmark: incremental reparse plus plan at the cursor while typing.

Owns the synthetic 5,000-line files it types into and the timing loop. Types a line
one character at a time in the middle of the file; each keystroke is one
Document.apply_change (Tree.edit + incremental reparse) and one plan() at the new
cursor. Warm-up keystrokes are excluded. Prints a table, then one JSON line last.

    diffill bench grammars [--lines 5000] [--keys 200] [--langs python,go,rust,typescript]
                             [--no-autoclose]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

from diffusion_core.protocol import percentile
from grammars.document import Document
from grammars.planner import plan

_TEMPLATES = {
    "python": ("def func_{i}(alpha, beta):\n    \"\"\"Combine {i}.\"\"\"\n    total = alpha + beta * {i}\n"
               "    if total > {i}:\n        return [x for x in range(total)]\n    return None\n\n",
               "    result = compute(alpha, beta) + len(items_{i})"),
    "go": ("func Func{i}(alpha int, beta int) []int {{\n\ttotal := alpha + beta*{i}\n\tif total > {i} {{\n"
           "\t\treturn make([]int, total)\n\t}}\n\treturn nil\n}}\n\n",
           "\tresult := compute(alpha, beta) + len(items{i})"),
    "rust": ("fn func_{i}(alpha: i64, beta: i64) -> Option<Vec<i64>> {{\n    let total = alpha + beta * {i};\n"
             "    if total > {i} {{\n        return Some((0..total).collect());\n    }}\n    None\n}}\n\n",
             "    let result = compute(alpha, beta) + items_{i}.len();"),
    "typescript": ("function func{i}(alpha: number, beta: number): number[] | null {{\n  const total = alpha + beta * {i};\n"
                   "  if (total > {i}) {{\n    return Array.from({{ length: total }});\n  }}\n  return null;\n}}\n\n",
                   "  const result = compute(alpha, beta) + items{i}.length;"),
}


def synthetic(lang: str, lines: int) -> tuple[str, int, str]:
    """(text of about `lines` lines, line index to type at, the line to type)."""
    template, typed = _TEMPLATES[lang]
    per = template.count("\n")
    count = max(1, lines // per)
    blocks = [template.format(i=i) for i in range(count)]
    mid = count // 2
    # Type on a fresh blank line inside the middle function's body, after its 3rd line.
    at_line = mid * per + 3
    return "".join(blocks), at_line, typed.format(i=mid)


# Editors insert the closing bracket or quote with the opening one (VS Code's
# autoClosingBrackets, Neovim autopairs) and step over it when it is typed; the
# default run types that way. --no-autoclose types every character literally, which
# leaves an unclosed "(" open while typing: Python's grammar then lets the bracket
# swallow every later newline and each reparse goes over the rest of the file.
_PAIRS = {"(": ")", "[": "]", "{": "}", '"': '"'}


def run(lang: str, lines: int, keys: int, warmup: int, autoclose: bool = True) -> dict:
    text, at_line, typed = synthetic(lang, lines)
    t0 = time.perf_counter()
    doc = Document(text, language_id=lang)
    full_parse_ms = (time.perf_counter() - t0) * 1e3
    doc.apply_change((at_line, 0), (at_line, 0), "\n")
    edit_ms, plan_ms, total_ms = [], [], []
    col = 0
    typed_count = 0
    plans = 0
    for k in range(warmup + keys):
        if col >= len(typed):  # line done: start a fresh one below and keep typing
            at_line += 1
            doc.apply_change((at_line - 1, col), (at_line - 1, col), "\n")
            col = 0
        ch = typed[col]
        t1 = time.perf_counter()
        next_char = doc.source[doc.offset_at(at_line, col):][:1].decode("utf-8", "replace")
        if autoclose and ch in _PAIRS.values() and next_char == ch:
            pass  # the editor steps over the auto-inserted closer: no edit
        elif autoclose and ch in _PAIRS:
            doc.apply_change((at_line, col), (at_line, col), ch + _PAIRS[ch])
        else:
            doc.apply_change((at_line, col), (at_line, col), ch)
        doc.tree  # the reparse is lazy: count it as part of the edit
        t2 = time.perf_counter()
        p = plan(doc, at_line, col + 1)
        t3 = time.perf_counter()
        col += 1
        typed_count += 1
        if k >= warmup:
            edit_ms.append((t2 - t1) * 1e3)
            plan_ms.append((t3 - t2) * 1e3)
            total_ms.append((t3 - t1) * 1e3)
            plans += p is not None
    return {
        "lang": lang, "autoclose": autoclose, "lines": doc.line_count, "bytes": len(doc.source), "keys": keys,
        "full_parse_ms": round(full_parse_ms, 2),
        "edit_p50_ms": round(percentile(edit_ms, 50) or 0.0, 3), "plan_p50_ms": round(percentile(plan_ms, 50) or 0.0, 3),
        "total_p50_ms": round(percentile(total_ms, 50) or 0.0, 3), "total_p95_ms": round(percentile(total_ms, 95) or 0.0, 3),
        "plans": plans,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="diffill bench grammars", description=__doc__.split("\n")[0],
                                 epilog="example:\n  diffill bench grammars --lines 2000 --keys 100 --langs python,rust",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=5000)
    ap.add_argument("--keys", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--langs", default=",".join(_TEMPLATES))
    ap.add_argument("--no-autoclose", action="store_true", help="also time literal typing (no auto-closed brackets)")
    args = ap.parse_args(argv)
    rows = []
    for lang in args.langs.split(","):
        if lang not in _TEMPLATES:
            print(f"unknown language {lang!r}; expected one of {list(_TEMPLATES)}", file=sys.stderr)
            return 2
        rows.append(run(lang, args.lines, args.keys, args.warmup))
        if args.no_autoclose:
            rows.append(run(lang, args.lines, args.keys, args.warmup, autoclose=False))
    head = f"{'lang':<14}{'lines':>6}{'full parse':>12}{'edit p50':>10}{'plan p50':>10}{'total p50':>11}{'total p95':>11}"
    print(head)
    for r in rows:
        name = r["lang"] + ("" if r["autoclose"] else " (lit)")
        print(f"{name:<14}{r['lines']:>6}{r['full_parse_ms']:>10.2f}ms{r['edit_p50_ms']:>8.3f}ms"
              f"{r['plan_p50_ms']:>8.3f}ms{r['total_p50_ms']:>9.3f}ms{r['total_p95_ms']:>9.3f}ms")
    worst = max(r["total_p50_ms"] for r in rows if r["autoclose"])
    summary = {"bench": "grammars.plan_at_cursor", "target_p50_ms": 2.0, "worst_total_p50_ms": worst,
               "machine": platform.machine(), "python": platform.python_version(),
               "command": "diffill bench grammars " + " ".join(argv if argv is not None else sys.argv[1:]),
               "rows": rows}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
