"""Held-out fill-in-the-middle holes: where the benchmark cuts a file, and the truth.

Owns turning held-out source files into holes the way an editor would meet them:
a span of the original file is removed, the cursor is put where it was, the grammars
planner plans at that cursor, and the ground truth is the removed text passed through
`finalize` (so it is cut by the same stop rules as a model's fill, and a perfect model
scores 1.0). Three kinds:

  * single-line: the rest of a code line after a cursor inside it (a "line" plan); the
    cursor goes to the start of an identifier, or with cut="mid-word" strictly inside an
    identifier or an operator (`resu|lt`, `=|=`), where an editor's prompt ends mid-token;
  * multi-line:  2-4 whole lines of consecutive sibling statements that end their
    block, replaced by one blank line indented as the first of them, cursor after the
    indentation (rule 6: a "block" plan with the editor's indentation; a blank line
    between two statements of one scope plans one line, so runs in the middle of a
    block are not multi-line holes);
  * block:       a whole body or block after its opener: Python `...:|` (rule 7) or
    `{|}` in brace languages (rule 8); the plan has a leading newline.

Hole choice depends only on the files, the seed and the counts, never on a model or
its tokenizer, so every model is scored on the same holes. Must not know torch or
engines.
"""
from __future__ import annotations

import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path

from grammars import budgets, queries
from grammars.document import Document, decode
from grammars.fillplan import FillPlan
from grammars.planner import in_string_or_comment, plan as plan_at
from grammars.postprocess import finalize
from grammars.text import is_ident_char, leading_ws

from .metrics import normalize

KINDS = ("single-line", "multi-line", "block")
# Share of the holes of each kind (single-line completions are what editors ask most).
KIND_SHARE = {"single-line": 0.5, "multi-line": 0.25, "block": 0.25}
# Truths longer than this share of the plan's budget, at the planner's own
# chars-per-token estimate, are skipped: a model cannot be asked for what its budget
# cannot hold, and a character limit keeps the hole set independent of the tokenizer.
TRUTH_BUDGET_SHARE = 0.75
MULTI_LINES = (2, 4)  # lines removed for a multi-line hole (inclusive range)
ATTEMPTS = 6  # random cursors tried per file and kind before moving to the next file
PASSES = 8  # rounds over the files before giving up on reaching the wanted counts
MAX_FILE_BYTES = 200_000  # larger files are skipped (parsing them per hole costs too much)
CUTS = ("token", "mid-word")  # where a single-line hole's cursor may fall (see _single_line)
# Characters of multi-character operators (`==`, `->`, `+=`, `::`, `**`): a cursor between
# two of them is inside an operator.
OPERATOR_CHARS = frozenset("=<>!+-*/%&|^~:.?")


@dataclass(frozen=True)
class SourceFile:
    path: str
    lang: str
    text: str


@dataclass
class Hole:
    kind: str  # one of KINDS
    path: str
    lang: str
    doc: Document  # the file with the span removed; the hole is at plan.start_byte
    plan: FillPlan
    truth: str  # finalize(doc, plan, removed span)
    column: int  # the cursor's character column


def load_files(paths: list[str | Path]) -> list[SourceFile]:
    """Records {"path", "lang", "text", ...} of corpus jsonl files; unreadable lines are
    reported on stderr and skipped."""
    files: list[SourceFile] = []
    for p in paths:
        with open(p, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                try:
                    rec = json.loads(line)
                    files.append(SourceFile(str(rec["path"]), str(rec.get("lang") or ""), str(rec["text"])))
                except (json.JSONDecodeError, KeyError, TypeError):
                    print(f"{p}:{lineno}: not a corpus record, skipped", file=sys.stderr)
    return files


def wanted_counts(n: int) -> dict[str, int]:
    counts = {k: int(n * KIND_SHARE[k]) for k in KINDS}
    counts["single-line"] += n - sum(counts.values())
    return counts


def sample_holes(files: list[SourceFile], n: int, seed: int = 0, cut: str = "token") -> list[Hole]:
    """About n holes (fewer when the files run out), kinds interleaved round-robin so
    that any prefix of the list is a balanced subset. cut="mid-word": n single-line holes
    whose cursor is inside an identifier or an operator (the token-healing benchmark)."""
    assert cut in CUTS, cut
    rng = random.Random(seed)
    order = sorted(files, key=lambda f: f.path)
    rng.shuffle(order)
    want = wanted_counts(n) if cut == "token" else {k: n if k == "single-line" else 0 for k in KINDS}
    found: dict[str, list[Hole]] = {k: [] for k in KINDS}
    docs: dict[int, Document] = {}
    for _ in range(PASSES):
        for i, f in enumerate(order):
            if all(len(found[k]) >= want[k] for k in KINDS):
                break
            if len(f.text.encode("utf-8", "surrogatepass")) > MAX_FILE_BYTES or not f.text.strip():
                continue
            doc = docs.get(i) or docs.setdefault(i, Document(f.text, language_id=f.lang or None, path=f.path))
            if doc.tree is None:
                continue
            for kind in KINDS:
                if len(found[kind]) < want[kind]:
                    hole = _try(kind, f, doc, rng, cut)
                    if hole is not None:
                        found[kind].append(hole)
    return _interleave(found)


def _interleave(found: dict[str, list[Hole]]) -> list[Hole]:
    out: list[Hole] = []
    # single-line twice per round, matching KIND_SHARE
    pattern = ["single-line", "multi-line", "single-line", "block"]
    queues = {k: list(v) for k, v in found.items()}
    while any(queues.values()):
        for k in pattern:
            if queues[k]:
                out.append(queues[k].pop(0))
    return out


def _try(kind: str, f: SourceFile, doc: Document, rng: random.Random, cut: str = "token") -> Hole | None:
    make = {"single-line": _mid_word if cut == "mid-word" else _single_line, "multi-line": _multi_line,
            "block": _block}[kind]
    for _ in range(ATTEMPTS):
        try:
            hole = make(f, doc, rng)
        except (ValueError, IndexError, UnicodeError):
            hole = None
        if hole is not None:
            return hole
    return None


def _max_chars(plan: FillPlan) -> int:
    return int(plan.budget * budgets.CHARS_PER_TOKEN * TRUTH_BUDGET_SHARE)


def _line(doc: Document, line_no: int) -> tuple[int, int, str]:
    start = doc.line_starts[line_no]
    _, _, end = doc.line_of(start)
    return start, end, decode(doc.source[start:end])


def _make(kind: str, f: SourceFile, doc: Document, cut_start: int, cut_end: int, cursor: int,
          raw: str, check) -> Hole | None:
    """Remove source[cut_start:cut_end], plan at byte `cursor` of the new document and
    keep the hole if `check(plan)` holds and the finalized truth is non-empty and fits."""
    if in_string_or_comment(doc, cursor):
        return None  # a docstring's quotes or a comment: not code the benchmark asks for
    new = doc.source[:cut_start] + doc.source[cut_end:]
    doc1 = Document(decode(new), language_id=doc.language_id, path=doc.path, lang=doc.lang)
    line, col = doc1.position_at(cursor, "utf-32")
    p = plan_at(doc1, line, col, encoding="utf-32")
    if p is None or p.start_byte != cursor or p.end_byte != cursor or not check(p):
        return None
    truth = finalize(doc1, p, raw)
    if not normalize(truth) or len(normalize(truth)) > _max_chars(p):
        return None
    return Hole(kind, f.path, doc.language or f.lang, doc1, p, truth, col)


def _code_lines(doc: Document) -> list[int]:
    return [i for i in range(1, doc.line_count) if _line(doc, i)[2].strip()]


def _single_line(f: SourceFile, doc: Document, rng: random.Random) -> Hole | None:
    lines = _code_lines(doc)
    if not lines:
        return None
    line_no = rng.choice(lines)
    start, end, text = _line(doc, line_no)
    indent, body_end = len(leading_ws(text)), len(text.rstrip())
    if body_end - indent < 2:
        return None
    col = rng.randint(indent + 1, body_end - 1)
    while col > indent and is_ident_char(text[col - 1]) and is_ident_char(text[col]):
        col -= 1  # never cut an identifier: the cursor goes to its start
    if col == indent:
        return None
    cursor = start + len(text[:col].encode("utf-8", "surrogatepass"))
    return _make("single-line", f, doc, cursor, end, cursor, text[col:body_end],
                 lambda p: p.kind == "line")


def _mid_word(f: SourceFile, doc: Document, rng: random.Random) -> Hole | None:
    """The rest of a code line after a cursor strictly inside an identifier or an operator."""
    lines = _code_lines(doc)
    if not lines:
        return None
    start, end, text = _line(doc, rng.choice(lines))
    indent, body_end = len(leading_ws(text)), len(text.rstrip())

    def inside(a: str, b: str) -> bool:
        return (is_ident_char(a) and is_ident_char(b)) or (a in OPERATOR_CHARS and b in OPERATOR_CHARS)

    cols = [c for c in range(indent + 1, body_end) if inside(text[c - 1], text[c])]
    if not cols:
        return None
    col = rng.choice(cols)
    cursor = start + len(text[:col].encode("utf-8", "surrogatepass"))
    return _make("single-line", f, doc, cursor, end, cursor, text[col:body_end], lambda p: p.kind == "line")


def _multi_line(f: SourceFile, doc: Document, rng: random.Random) -> Hole | None:
    lines = _code_lines(doc)
    if not lines:
        return None
    first = rng.choice(lines)
    count = rng.randint(*MULTI_LINES)
    last = first + count - 1
    if last >= doc.line_count:
        return None
    rows = [_line(doc, i) for i in range(first, last + 1)]
    if not all(t.strip() for _, _, t in rows):
        return None
    ls, _, text = rows[0]
    ws = leading_ws(text)
    s = ls + len(ws.encode())
    e = rows[-1][0] + len(rows[-1][2].rstrip().encode("utf-8", "surrogatepass"))
    if not _sibling_run(doc, s, e):
        return None
    raw = decode(doc.source[s:e])
    return _make("multi-line", f, doc, s, rows[-1][1], s, raw,
                 lambda p: p.kind == "block" and not p.leading and not p.stop.single_line)


_BRACKETS = frozenset("()[]{}")


def _sibling_run(doc: Document, s: int, e: int) -> bool:
    """Whether bytes [s, e) are exactly a run of consecutive sibling nodes without
    syntax errors (whole statements, not half of one) and without the brackets that
    delimit their parent."""
    node = doc.tree.root_node.descendant_for_byte_range(s, s)
    if node is None:
        return False
    while node.parent is not None and node.parent.start_byte == s:
        node = node.parent
    parent = node.parent
    if parent is None or node.start_byte != s:
        return False
    children = parent.children
    k = next(i for i, c in enumerate(children) if c.id == node.id)
    for c in children[k:]:
        if c.has_error or c.is_missing or c.end_byte > e or c.type in _BRACKETS:
            return False
        if c.end_byte == e:
            return True
    return False


def _block(f: SourceFile, doc: Document, rng: random.Random) -> Hole | None:
    query = queries.load(doc.lang.name, "infill") if doc.lang else None
    lines = _code_lines(doc)
    if query is None or not lines:
        return None
    start, end, _ = _line(doc, rng.choice(lines))
    probe = rng.randint(start, max(start, end - 1))
    nodes = [n for name, n in queries.captures_in_range(query, doc.tree.root_node, probe, probe + 1)
             if name in ("body", "block") and n.start_byte <= probe < n.end_byte and not n.has_error]
    if not nodes:
        return None
    node = min(nodes, key=lambda n: n.end_byte - n.start_byte)  # the innermost
    src = doc.source
    if src[node.start_byte:node.start_byte + 1] == b"{" and src[node.end_byte - 1:node.end_byte] == b"}":
        inner_s, inner_e = node.start_byte + 1, node.end_byte - 1
        if b"\n" not in src[inner_s:inner_e] or not src[inner_s:inner_e].strip():
            return None
        raw = decode(src[inner_s:inner_e]).strip()
        return _make("block", f, doc, inner_s, inner_e, inner_s, raw,
                     lambda p: p.kind == "block" and p.leading.startswith("\n"))
    head = src[:node.start_byte].rstrip()
    gap = src[len(head):node.start_byte]
    if not head.endswith(b":") or b"\n" not in gap or gap.strip():
        return None  # one-line bodies (`if x: y`) and headers ending in a comment
    raw = decode(src[node.start_byte:node.end_byte])
    return _make("block", f, doc, len(head), node.end_byte, len(head), raw,
                 lambda p: p.kind == "block" and p.leading.startswith("\n"))


def prev_line_fill(hole: Hole) -> str:
    """The copy-the-previous-line baseline, raw (finalize it like a model's fill):
    the previous non-blank line from the cursor's column for single-line holes, the
    whole previous non-blank line otherwise."""
    line, _ = hole.doc.position_at(hole.plan.start_byte, "utf-8")
    for i in range(line - 1, -1, -1):
        text = _line(hole.doc, i)[2]
        if text.strip():
            return text[hole.column:] if hole.kind == "single-line" else text.strip()
    return ""
