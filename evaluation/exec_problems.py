"""Execution-checked infilling problems written from the corpus's own validation split.

Owns turning validation-split Python files into HumanEval-Infilling-format records
(task_id, prompt, suffix, canonical_solution, test, entry_point), so that execution
pass@1 is measured on code no model here was trained or tuned on, and never on a
published benchmark's problems:

1. pick self-contained top-level functions: positional parameters only, no imports,
   no globals but safe builtins and module-level literal constants (copied into the
   prompt), no generators, no I/O names;
2. run each on a fixed pool of small arguments in a sandboxed interpreter and keep the
   calls that return a literal-representable value twice the same: those become the
   asserts of `check(candidate)`;
3. cut one body line (single-line) or a run of 2-4 lines (multi-line) as the hole, and
   keep the cut only if the program without it fails the tests (the hole matters).

    python -m evaluation.exec_problems --corpus corpus --out runs/valid_infilling.jsonl

Must not know models or metrics; runs programs only through a sandboxed subprocess.
"""
from __future__ import annotations

import argparse
import ast
import builtins
import hashlib
import itertools
import json
import random
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from evaluation.sandbox import run_program

# Names a candidate may use besides its own: pure builtins only (no open, exec, input,
# __import__, globals, getattr-style reflection that reaches modules).
SAFE_BUILTINS = frozenset({
    "abs", "all", "any", "bin", "bool", "chr", "dict", "divmod", "enumerate", "filter", "float",
    "format", "frozenset", "hex", "int", "isinstance", "len", "list", "map", "max", "min", "oct",
    "ord", "pow", "range", "repr", "reversed", "round", "set", "slice", "sorted", "str", "sum",
    "tuple", "zip", "True", "False", "None", "ValueError", "TypeError", "KeyError", "IndexError",
    "Exception", "StopIteration", "ZeroDivisionError", "NotImplemented", "bytes", "iter", "next",
    "issubclass", "hash", "type", "object",
})
# Pure standard-library modules a candidate may use when its file imports them at top level
# (the import line is copied into the prompt).
SAFE_MODULES = frozenset({"math", "re", "string", "itertools", "collections", "functools", "operator",
                          "bisect", "heapq", "textwrap", "unicodedata", "fractions", "decimal", "keyword"})
# The argument pool every function is probed with: small, varied, literal values.
ARG_POOL = (0, 1, 2, 3, 7, -4, 10, 0.5, 2.25, "", "a", "abc", "Hello World", "a,b,,c", "  padded  ",
            "x_y-z", [], [1, 2, 3], [3, 1, 2, 2], ["b", "a"], (1, 2), {"a": 1, "b": 2}, None, True, False)
MAX_PARAMS = 3
MAX_CALLS_PER_ARITY = {0: 1, 1: len(ARG_POOL), 2: 150, 3: 200}
MIN_CASES, MAX_CASES = 3, 8  # asserts per problem
BODY_LINES = (3, 30)  # function body length in lines (docstring excluded)
CALL_SECONDS = 0.05  # per probe call; longer calls are dropped, not waited for
PROBE_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Candidate:
    name: str
    source: str  # the function, dedented to column 0
    preamble: str  # module-level literal constants it reads
    n_params: int
    n_required: int
    origin: str  # corpus path


def _free_names(fn: ast.FunctionDef) -> set[str]:
    bound = {a.arg for a in fn.args.args}
    loads: set[str] = set()
    for node in ast.walk(fn):
        if isinstance(node, ast.Name):
            (loads if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.Lambda)) and node is not fn:
            bound.update(a.arg for a in node.args.args)
            if isinstance(node, ast.FunctionDef):
                bound.add(node.name)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
    return loads - bound


def _forbidden(fn: ast.FunctionDef) -> bool:
    for node in ast.walk(fn):
        if isinstance(node, (ast.Import, ast.ImportFrom, ast.Global, ast.Nonlocal, ast.Yield, ast.YieldFrom,
                             ast.Await, ast.AsyncFunctionDef, ast.ClassDef)):
            return True
        if isinstance(node, ast.Attribute) and node.attr.startswith("__"):
            return True
    return False


def _constants(tree: ast.Module) -> dict[str, str]:
    """Module-level `NAME = <literal>` assignments and imports of SAFE_MODULES, as source lines."""
    out = {}
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            mod = node.module if isinstance(node, ast.ImportFrom) else None
            for alias in node.names:
                root = (mod or alias.name).split(".")[0]
                if root in SAFE_MODULES and alias.name != "*" and (node.level if mod else 0) == 0:
                    one = ast.ImportFrom(mod, [alias], 0) if mod else ast.Import([alias])
                    out[(alias.asname or alias.name).split(".")[0]] = ast.unparse(one)
            continue
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                ast.literal_eval(node.value)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                continue
            text = ast.unparse(node)
            if len(text) <= 200:
                out[node.targets[0].id] = text
    return out


def candidates(path: str, text: str) -> list[Candidate]:
    """The self-contained top-level functions of one Python file."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return []
    consts = _constants(tree)
    lines = text.splitlines(keepends=True)
    # Self-contained top-level functions may be called by others: their source joins the preamble.
    for fn in tree.body:
        if isinstance(fn, ast.FunctionDef) and not fn.decorator_list and not _forbidden(fn) \
                and all(n in SAFE_BUILTINS or n in consts for n in _free_names(fn) - {fn.name}):
            consts.setdefault(fn.name, "".join(lines[fn.lineno - 1 : fn.end_lineno]).rstrip("\n"))
    out = []
    for fn in tree.body:
        if not isinstance(fn, ast.FunctionDef) or fn.decorator_list or fn.name.startswith("__"):
            continue
        a = fn.args
        if a.vararg or a.kwarg or a.kwonlyargs or a.posonlyargs or len(a.args) > MAX_PARAMS:
            continue
        body = fn.body[1:] if ast.get_docstring(fn) is not None else fn.body
        if not body or not BODY_LINES[0] <= body[-1].end_lineno - body[0].lineno + 1 <= BODY_LINES[1]:
            continue
        if _forbidden(fn):
            continue
        free = _free_names(fn) - {fn.name}
        if any(n not in SAFE_BUILTINS and n not in consts for n in free):
            continue
        src = "".join(lines[fn.lineno - 1 : fn.end_lineno])
        if not src.startswith("def "):  # comments or odd layout before the def
            continue
        pre = "".join(consts[n] + "\n" for n in sorted(free) if n in consts)
        if "\ndef " in "\n" + pre:
            pre += "\n\n"  # a helper function: keep PEP 8 spacing before the candidate
        out.append(Candidate(fn.name, src, pre, len(a.args), len(a.args) - len(a.defaults), path))
    return out


def _arg_sets(n_params: int, n_required: int, rng: random.Random) -> list[tuple]:
    sets = []
    for n in range(n_required, n_params + 1):
        every = list(itertools.product(ARG_POOL, repeat=n))
        cap = MAX_CALLS_PER_ARITY[min(n, MAX_PARAMS)]
        sets += every if len(every) <= cap else rng.sample(every, cap)
    return sets


_PROBE = r'''
import json, signal, sys, ast, copy
def _alarm(*_):
    raise TimeoutError
signal.signal(signal.SIGALRM, _alarm)
calls = json.loads(sys.stdin.read())
results = []
for fn_index, args_list in calls:
    fn = FUNCS[fn_index]
    kept = []
    for args in args_list:
        args = ast.literal_eval(args)
        try:
            signal.setitimer(signal.ITIMER_REAL, %(seconds)r)
            a = fn(*copy.deepcopy(args))
            b = fn(*copy.deepcopy(args))
            signal.setitimer(signal.ITIMER_REAL, 0)
            r = repr(a)
            if len(r) <= 200 and r == repr(b) and ast.literal_eval(r) == a:
                kept.append([repr(args), r])
        except BaseException:
            signal.setitimer(signal.ITIMER_REAL, 0)
    results.append(kept)
print(json.dumps(results))
'''


def probe(cands: list[Candidate], rng: random.Random) -> list[list[tuple[str, str]]]:
    """Per candidate, the (args repr, result repr) calls that returned a stable literal."""
    defs = []
    for i, c in enumerate(cands):
        defs.append(f"def _make_{i}():\n" + "".join("    " + l for l in (c.preamble + c.source).splitlines(True))
                    + f"\n    return {c.name}\n")
    program = "\n".join(defs) + f"\nFUNCS = [{', '.join(f'_make_{i}()' for i in range(len(cands)))}]\n"
    program += _PROBE % {"seconds": CALL_SECONDS}
    calls = [[i, [repr(a) for a in _arg_sets(c.n_params, c.n_required, rng)]] for i, c in enumerate(cands)]
    with tempfile.TemporaryDirectory(prefix="diffill-probe-") as tmp:
        prog = Path(tmp) / "probe.py"
        prog.write_text(program, encoding="utf-8")
        try:
            done = subprocess.run([sys.executable, "-I", "-B", str(prog)], input=json.dumps(calls), cwd=tmp,
                                  capture_output=True, text=True, timeout=PROBE_TIMEOUT_S,
                                  env={"PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "0"})
        except subprocess.TimeoutExpired:
            return [[] for _ in cands]
    if done.returncode != 0:
        return [[] for _ in cands]
    return [[tuple(x) for x in kept] for kept in json.loads(done.stdout)]


def _check_source(cases: list[tuple[str, str]]) -> str:
    lines = ["def check(candidate):"]
    lines += [f"    assert candidate(*{args}) == {result}" for args, result in cases]
    return "\n".join(lines) + "\n"


def _program(prompt: str, fill: str, suffix: str, test: str, entry: str) -> str:
    return prompt + fill + suffix + "\n\n" + test + f"\n\ncheck({entry})\n"


def _body_rows(c: Candidate) -> list[int]:
    """0-based line indices of the function source that are code lines of its body."""
    fn = ast.parse(c.source).body[0]
    body = fn.body[1:] if ast.get_docstring(fn) is not None else fn.body
    first, last = body[0].lineno - 1, body[-1].end_lineno - 1
    src = c.source.splitlines()
    return [i for i in range(first, last + 1) if src[i].strip() and not src[i].strip().startswith("#")]


def holes_of(c: Candidate, rng: random.Random, per_kind: int) -> list[tuple[str, int, int]]:
    """(kind, first line, end line) cuts: single lines and runs of 2-4 consecutive code lines."""
    rows = _body_rows(c)
    singles = [("single", i, i + 1) for i in rows]
    runs = [("multi", i, i + n) for i in rows for n in (2, 3, 4) if all(j in rows for j in range(i, i + n))]
    rng.shuffle(singles)
    rng.shuffle(runs)
    return singles[:per_kind] + runs[:per_kind]


def problems_of(c: Candidate, cases: list[tuple[str, str]], rng: random.Random, per_kind: int) -> list[dict]:
    outputs = {r for _, r in cases}
    if len(cases) < MIN_CASES or len(outputs) < 2:
        return []
    chosen = rng.sample(cases, min(MAX_CASES, len(cases)))
    if len({r for _, r in chosen}) < 2:
        chosen = cases[:MAX_CASES]
    test = _check_source(chosen)
    src = c.source.splitlines(keepends=True)
    tag = hashlib.sha1(f"{c.origin}:{c.name}".encode()).hexdigest()[:8]
    out = []
    for kind, lo, hi in holes_of(c, rng, per_kind):
        prompt = c.preamble + "".join(src[:lo])
        solution, suffix = "".join(src[lo:hi]), "".join(src[hi:])
        if not run_program(_program(prompt, solution, suffix, test, c.name)).passed:
            continue  # the full function must pass its own asserts in the harness
        if run_program(_program(prompt, "", suffix, test, c.name)).passed:
            continue  # the hole does not matter to the tests
        prefix = "SingleLineInfilling" if kind == "single" else "MultiLineInfilling"
        span = f"L{lo}" if kind == "single" else f"L{lo}_L{hi - 1}"
        out.append({"task_id": f"{prefix}/diffill-valid/{tag}-{c.name}/{span}", "prompt": prompt,
                    "suffix": suffix, "canonical_solution": solution, "test": test, "entry_point": c.name,
                    "origin": c.origin})
    return out


def build(corpus_files: list[Path], n_single: int, n_multi: int, seed: int = 0, per_kind: int = 2) -> list[dict]:
    rng = random.Random(seed)
    cands: list[Candidate] = []
    for path in corpus_files:
        with open(path, encoding="utf-8") as f:
            for line in f:
                rec = json.loads(line)
                if rec.get("lang") == "python":
                    cands += candidates(rec["path"], rec["text"])
    rng.shuffle(cands)
    found: list[dict] = []
    for start in range(0, len(cands), 40):
        batch = cands[start : start + 40]
        for c, cases in zip(batch, probe(batch, rng)):
            found += problems_of(c, cases, rng, per_kind)
        singles = [p for p in found if p["task_id"].startswith("SingleLine")]
        if len(singles) >= n_single and len(found) - len(singles) >= n_multi:
            break
    singles = [p for p in found if p["task_id"].startswith("SingleLine")][:n_single]
    multis = [p for p in found if p["task_id"].startswith("MultiLine")][:n_multi]
    return singles + multis


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m evaluation.exec_problems",
                                 description="Write HumanEval-Infilling-format problems from a corpus's validation split.")
    ap.add_argument("--corpus", default="corpus", help="corpus folder (diffill train corpus) with valid.jsonl")
    ap.add_argument("--out", required=True, help="jsonl file to write")
    ap.add_argument("--single", type=int, default=60, help="single-line problems (default %(default)s)")
    ap.add_argument("--multi", type=int, default=30, help="multi-line problems (default %(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    # Both splits that no training run reads: the validation files and the held-out packages.
    files = [Path(args.corpus) / name for name in ("valid.jsonl", "holdout.jsonl")]
    if not files[0].is_file():
        print(f"{files[0]}: not found (build a corpus with `diffill train corpus --out DIR`)", file=sys.stderr)
        return 1
    probs = build([f for f in files if f.is_file()], args.single, args.multi, args.seed)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        for p in probs:
            f.write(json.dumps(p) + "\n")
    n1 = sum(p["task_id"].startswith("SingleLine") for p in probs)
    print(f"{args.out}: {n1} single-line and {len(probs) - n1} multi-line problems from "
          f"{len({p['origin'] for p in probs})} validation files", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
