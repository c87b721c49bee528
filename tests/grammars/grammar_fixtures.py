"""Caret-annotated fixture files: code with expectations on comment lines below it.

An annotation line is the language's line comment followed by either a caret `^`
(the cursor is at the caret's column of the nearest code line above; `^~~~` also marks
the expected span up to the last `~`, inclusive) or `<-` (the cursor is at the column
where the comment starts, so column 0 can be marked). The rest of the line is the
expectation, e.g. `insert line target=arguments`, `replace block`, `none`, `hole`.
Columns count code points. Annotation lines are removed before the document is built,
so they never change the tree under test. Same idea as tree-sitter's highlight tests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"
COMMENT = {".py": "#"}


@dataclass
class Case:
    line: int  # in the stripped text
    col: int  # code points
    end_col: int | None  # inclusive end of a `^~~~` span, exclusive -> col..end_col
    expect: list[str]
    where: str  # file:line of the annotation, for failure messages


def parse_fixture(path: Path) -> tuple[str, list[Case]]:
    comment = COMMENT.get(path.suffix, "//")
    ann = re.compile(r"^(\s*)" + re.escape(comment) + r"(\s*)(\^~*|<-)(.*)$")
    code: list[str] = []
    cases: list[Case] = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
        m = ann.match(raw)
        if not m:
            code.append(raw)
            continue
        assert code, f"{path.name}:{number}: annotation before any code"
        mark = m.group(3)
        if mark == "<-":
            col, end = len(m.group(1)), None
        else:
            col = raw.index("^")
            end = col + len(mark) if len(mark) > 1 else None
        cases.append(Case(len(code) - 1, col, end, m.group(4).split(), f"{path.name}:{number}"))
    return "\n".join(code), cases


def fixture_files(kind: str) -> list[Path]:
    return sorted(p for p in (FIXTURES / kind).iterdir() if p.is_file())


def options(expect: list[str]) -> dict[str, str]:
    return dict(w.split("=", 1) for w in expect if "=" in w)


def words(expect: list[str]) -> list[str]:
    return [w for w in expect if "=" not in w]
