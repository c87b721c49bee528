"""`diffill bench examples`: `diffill fill` on the sample files, compiled.

Owns issue 24's "done when" check: each sample file of examples/ (Python, C, Go, Rust,
JavaScript, TypeScript) is filled by `diffill fill FILE` in a subprocess, as a fresh clone
runs it (default model unless --model), and the printed file must
  * compile with the language's compiler when one is installed (python's compile(), gcc
    -fsyntax-only -Werror=return-type, go build, rustc --emit=metadata, tsc --noEmit,
    node --check), else parse without a tree-sitter error;
  * keep its indentation: every line's leading whitespace is the file's own kind (tabs in
    Go, spaces elsewhere) and, in brace languages, as deep as its brackets say
    (`indent_errors`; Python's indentation is its compiler's to check).
A table, then one JSON line. Timings are wall seconds of the whole `diffill fill` (model
load included). Must not know tensors: it only runs commands.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from grammars.document import Document
from grammars.postprocess import count_errors

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
FILES = ("holes.py", "holes.c", "holes.go", "holes.rs", "holes.js", "holes.ts")
CLOSERS, OPENERS = ")]}", "([{"
FILL_TIMEOUT_S = 900
EPILOG = """examples:
  diffill bench examples                          every sample file, the default model
  diffill bench examples --files holes.c,holes.rs --model ~/models/my-coder.gguf"""


def _compile_cmd(name: str, path: Path) -> list[str] | None:
    """The compiler check for `path` (a copy of the filled file), or None when the
    language's compiler is not installed."""
    ext = path.suffix
    if ext == ".py":
        return [sys.executable, "-c", "import sys; compile(open(sys.argv[1]).read(), sys.argv[1], 'exec')", str(path)]
    if ext == ".c" and shutil.which("gcc"):
        return ["gcc", "-fsyntax-only", "-Werror=return-type", str(path)]
    if ext == ".go" and shutil.which("go"):
        return ["go", "build", "-o", os.devnull, str(path)]
    if ext == ".rs" and shutil.which("rustc"):
        return ["rustc", "--edition", "2021", "--crate-type", "bin", "--emit=metadata", "-o",
                str(path.with_suffix(".rmeta")), str(path)]
    if ext == ".ts" and shutil.which("tsc"):
        return ["tsc", "--noEmit", "--strict", "--target", "es2020", str(path)]
    if ext == ".js" and shutil.which("node"):
        return ["node", "--check", str(path)]
    return None


def _line_states(lines: list[str], lang: str) -> list[tuple[int, bool]]:
    """(bracket depth at the line's start, whether it starts inside a block comment or a
    template string) of each line; strings and comments hold no brackets."""
    states, depth, comment, quote = [], 0, False, ""
    for line in lines:
        states.append((depth, comment or quote == "`"))
        i = 0
        while i < len(line):
            c, nxt = line[i], line[i + 1 : i + 2]
            if comment:
                if c == "*" and nxt == "/":
                    comment, i = False, i + 1
            elif quote:
                if c == "\\":
                    i += 1
                elif c == quote:
                    quote = ""
            elif c == "/" and nxt == "*":
                comment, i = True, i + 1
            elif (c == "/" and nxt == "/") or (c == "#" and lang == "python"):
                break
            elif c in "\"'`":
                quote = c
            elif c in OPENERS:
                depth += 1
            elif c in CLOSERS:
                depth -= 1
            i += 1
        if quote != "`":
            quote = ""  # only template literals span lines here
    return states


def indent_errors(text: str, lang: str) -> list[str]:
    """Lines whose indentation is not intact: a tab in a space-indented file or a space
    in Go's tab indentation, or (brace languages) an indent that is not its bracket depth
    times the file's unit (the smallest indent of a line one bracket deep). Lines inside
    block comments are skipped; a line that starts with a closer sits one level out."""
    lines = text.splitlines()
    states = _line_states(lines, lang)
    tab = lang == "go"
    widths = [len(ln) - len(ln.lstrip(" \t")) for ln in lines]
    unit = 1 if tab else min((w for ln, w, (d, skip) in zip(lines, widths, states)
                              if d == 1 and not skip and ln.strip() and ln.lstrip()[0] not in CLOSERS), default=4) or 4
    errors = []
    for no, (line, w, (depth, skip)) in enumerate(zip(lines, widths, states), 1):
        body = line[w:]
        if not body or skip:
            continue
        if (" " if tab else "\t") in line[:w]:
            errors.append(f"{no}: mixed indentation {line[:w]!r}")
        elif lang != "python":
            want = (depth - (1 if body[0] in CLOSERS else 0)) * unit
            if w != want:
                errors.append(f"{no}: indent {w}, brackets say {want}: {body[:40]!r}")
    return errors


def check(name: str, text: str) -> dict:
    """Compile (or parse) and indentation verdicts of one filled file."""
    doc = Document(text, path=name)
    lang = doc.lang.name if doc.lang else ""
    out = {"lang": lang, "indent_errors": indent_errors(text, lang)}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(text, encoding="utf-8")
        cmd = _compile_cmd(name, path)
        if cmd is None:
            out["checker"] = "tree-sitter"
            n = count_errors(doc.tree.root_node) if doc.tree is not None else 1
            out["compiles"], out["compile_log"] = n == 0, f"{n} tree-sitter error nodes"
        else:
            out["checker"] = Path(cmd[0]).name if cmd[0] != sys.executable else "python compile()"
            run = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp)
            out["compiles"], out["compile_log"] = run.returncode == 0, (run.stderr or run.stdout)[-2000:]
    out["ok"] = out["compiles"] and not out["indent_errors"]
    return out


def fill_cmd(args) -> list[str]:
    exe = shutil.which("diffill")
    cmd = [exe] if exe else [sys.executable, "-m", "diffill"]
    cmd += ["fill"]
    if args.model:
        cmd += ["--model", args.model]
    return cmd


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="diffill bench examples", description=__doc__.split("\n")[0], epilog=EPILOG,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model folder or .gguf (default: the default model)")
    ap.add_argument("--files", default=",".join(FILES), help="sample files of examples/ (default %(default)s)")
    args = ap.parse_args(argv)
    rows = []
    for name in args.files.split(","):
        t0 = time.perf_counter()
        run = subprocess.run(fill_cmd(args) + [str(EXAMPLES / name)], capture_output=True, text=True,
                             timeout=FILL_TIMEOUT_S)
        wall = time.perf_counter() - t0
        row = {"file": name, "rc": run.returncode, "wall_s": round(wall, 1), "stderr": run.stderr[-1000:]}
        if run.returncode == 0:
            row.update(check(name, run.stdout))
            row["output"] = run.stdout
        else:
            row.update(ok=False, compiles=False, checker="-", indent_errors=[])
        rows.append(row)
        print(f"{name:10s} rc {run.returncode} {row['checker']:16s} compiles {row['compiles']!s:5s} "
              f"indent errors {len(row['indent_errors'])}  {wall:6.1f} s", file=sys.stderr)
        for e in row["indent_errors"][:5]:
            print(f"    {e}", file=sys.stderr)
        if not row["compiles"] and row.get("compile_log"):
            print("    " + row["compile_log"].strip().replace("\n", "\n    ")[:800], file=sys.stderr)
    print("| file | checker | compiles | indentation | wall s |", "| --- | --- | --- | --- | --- |", sep="\n")
    for r in rows:
        print(f"| {r['file']} | {r['checker']} | {'yes' if r['compiles'] else 'no'} | "
              f"{'intact' if not r['indent_errors'] else str(len(r['indent_errors'])) + ' lines off'} | {r['wall_s']} |")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    print(json.dumps({"bench": "examples", "ok": all(r["ok"] for r in rows), "files": rows,
                      "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_avg_1m": load},
                      "command": " ".join(["diffill bench examples", *(sys.argv[1:] if argv is None else argv)])}))
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
