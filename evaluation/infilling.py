"""HumanEval-Infilling style problems: reading them and turning a fill into a program.

Owns the file format (jsonl or jsonl.gz, one record a line with task_id, prompt,
suffix, canonical_solution, test, entry_point; the single-line, multi-line and
random-span variants differ only in where the hole is), the one-line errors for bad
files, and the program a candidate is judged by: prompt + fill + suffix + test +
`check(entry_point)`, and post-processing a raw fill for the hole (grammars plan and
finalize). Must not know models or how programs are run (eval_exec does).
"""
from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, replace
from pathlib import Path

from diffusion_core.errors import CoreError

FIELDS = ("task_id", "prompt", "suffix", "canonical_solution", "test", "entry_point")


@dataclass(frozen=True)
class Problem:
    task_id: str
    prompt: str
    suffix: str
    canonical_solution: str
    test: str
    entry_point: str

    @property
    def single_line(self) -> bool:
        """Whether the hole is known to be one line: from the task id in the published
        files (SingleLineInfilling/... yes; MultiLineInfilling/..., RandomSpanInfilling/...
        no, even when a solution happens to be one line: a harness may not peek), else,
        for other files, from the canonical solution."""
        if self.task_id.startswith("SingleLine"):
            return True
        if self.task_id.startswith(("MultiLine", "RandomSpan")):
            return False
        return self.canonical_solution.rstrip("\n").count("\n") == 0

    @property
    def whole_lines(self) -> bool:
        """The hole starts at a line start and ends with a newline (line-based variants)."""
        return (not self.prompt or self.prompt.endswith("\n")) and self.canonical_solution.endswith("\n")


def load_problems(path: str | Path, limit: int | None = None) -> list[Problem]:
    """Problems of a jsonl / jsonl.gz file; CoreError naming the file and line at fault."""
    path = Path(path)
    if not path.is_file():
        raise CoreError(f"{path}: no such dataset file")
    opener = gzip.open if path.suffix == ".gz" else open
    problems: list[Problem] = []
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                problems.append(_parse(path, lineno, line))
                if limit is not None and len(problems) >= limit:
                    break
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise CoreError(f"{path}: cannot read ({exc})") from None
    return problems


def _parse(path: Path, lineno: int, line: str) -> Problem:
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as exc:
        raise CoreError(f"{path}:{lineno}: not JSON ({exc.msg})") from None
    if not isinstance(rec, dict):
        raise CoreError(f"{path}:{lineno}: expected a JSON object")
    missing = [k for k in FIELDS if k not in rec]
    if missing:
        raise CoreError(f"{path}:{lineno}: missing {', '.join(missing)}")
    bad = [k for k in FIELDS if not isinstance(rec[k], str)]
    if bad:
        raise CoreError(f"{path}:{lineno}: {', '.join(bad)} must be strings")
    return Problem(**{k: rec[k] for k in FIELDS})


def program(problem: Problem, fill: str) -> str:
    """The program that passes iff the fill is correct (the HumanEval harness's
    `check(entry_point)` call after the test code)."""
    return f"{problem.prompt}{fill}{problem.suffix}\n\n{problem.test}\n\ncheck({problem.entry_point})\n"


def finalize_fill(prob: Problem, raw: str) -> str:
    """A raw model fill cut and re-indented by the grammars post-processing.

    Whole-line holes (the line variants) take the model's own indentation: the fill
    is finalized as if typed on a blank line holding that indentation (planner rule
    6), one line only for single-line tasks. Mid-line holes are finalized with the
    planner's plan at the cursor; where the planner plans nothing, the raw fill stays.
    Random spans that may cross lines stay raw too: no editor cursor asks for them, and
    the planner would read the rest of the line after the hole as a single-line fill's
    context.
    """
    if not prob.whole_lines and not prob.single_line:
        return raw
    from grammars.document import Document
    from grammars.planner import plan as plan_at
    from grammars.postprocess import finalize
    from grammars.text import leading_ws

    ws = ""
    if prob.whole_lines:
        ws = leading_ws(next((line for line in raw.split("\n") if line.strip()), ""))
        doc = Document(prob.prompt + ws + "\n" + prob.suffix, language_id="python")
    else:
        doc = Document(prob.prompt + prob.suffix, language_id="python")
    cursor = len((prob.prompt + ws).encode("utf-8", "surrogatepass"))
    line, col = doc.position_at(cursor, "utf-32")
    p = plan_at(doc, line, col, encoding="utf-32")
    if p is None or p.start_byte != cursor or p.end_byte != cursor:
        text = raw.split("\n", 1)[0] if prob.single_line else raw  # nothing to plan: the raw fill
        return text + ("\n" if prob.whole_lines and not text.endswith("\n") else "")
    # The task says how many lines the hole has (an editor's blank line between two
    # statements plans one line: a multi-line task keeps its block).
    p = replace(p, stop=replace(p.stop, single_line=prob.single_line, max_lines=1 if prob.single_line else None))
    text = finalize(doc, p, raw)
    return ws + text + "\n" if prob.whole_lines else text


def editor_fill(prob: Problem, cursor: str):
    """The document an editor holds for a whole-line problem and the cursor's byte offset:
    the hole's lines replaced by one blank line, the cursor at its column 0 ("column0") or
    after the canonical solution's indentation ("indent")."""
    from grammars.document import Document
    from grammars.text import leading_ws

    ws = leading_ws(prob.canonical_solution) if cursor == "indent" else ""
    doc = Document(prob.prompt + ws + "\n" + prob.suffix, language_id="python")
    return doc, len((prob.prompt + ws).encode("utf-8", "surrogatepass"))


def fill_shape(prob: Problem, fill: str) -> tuple[int, bool]:
    """(lines with content, whether the first one lacks the solution's indentation) of the
    text a fill leaves on the hole's lines."""
    from grammars.text import leading_ws

    lines = [line for line in fill.split("\n") if line.strip()]
    want = leading_ws(prob.canonical_solution)
    return len(lines), bool(lines) and bool(want) and leading_ws(lines[0]) != want
