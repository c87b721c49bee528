"""What a plan is: FillPlan and the StopRules post-processing cuts a fill with.

Owns the plan dataclasses and the one rule both the planner and hole finding use to
set a single-line fill's bracket allowance. Must not know how plans are chosen.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from grammars.text import BracketScan, indent_width

MODES = ("insert", "replace", "regenerate")
KINDS = ("line", "block")


@dataclass(frozen=True)
class StopRules:
    """Where post-processing cuts a fill (and where a streaming decoder could stop).

    single_line: stop at the first newline.
    dedent:      stop at the first later line indented less than the plan's indent.
    min_depth:   lowest bracket depth the fill may reach; -n lets it close n brackets
                 opened before the hole and not closed after it, so a closer below that
                 ends the fill (it would close the enclosing scope).
    max_lines:   keep at most this many lines (None: no limit).
    """

    single_line: bool = False
    dedent: bool = False
    min_depth: int = 0
    max_lines: int | None = None


@dataclass(frozen=True)
class FillPlan:
    """A span of the document to fill. Byte offsets index doc.source (UTF-8)."""

    start_byte: int
    end_byte: int
    mode: str  # "insert" | "replace" | "regenerate"
    kind: str  # "line" | "block"
    budget: int
    indent: str
    stop: StopRules = field(default_factory=StopRules)
    target: str = "line"  # the capture-vocabulary name of what is filled (or "line", "hole")
    leading: str = ""  # text finalize puts before the fill (a newline after `def f():|`)
    trailing: str = ""  # text finalize puts after it (a newline before `}` in `{|}`)
    # Indentations the fill's first line may take at the model's choice (a column-0 cursor
    # at the end of a nested block may continue it or an enclosing one); the shallowest is
    # the scope's floor. Empty: the first line goes at `indent`.
    levels: tuple[str, ...] = ()

    @property
    def floor(self) -> str:
        """The indentation below which a later line of the fill has left its scope."""
        return min(self.levels, key=indent_width) if self.levels else self.indent


def line_stop(scan: BracketScan, before: str, after: str) -> StopRules:
    """Single-line stop rules: the fill may close brackets the line opened before it
    and the rest of the line does not close."""
    _, open_before = scan.net(before)
    close_after, _ = scan.net(after)
    return StopRules(single_line=True, min_depth=-max(0, open_before - close_after))


def model_line_start(plan: FillPlan, line_before: str) -> str:
    """What the model is shown of the hole's line before the hole, given the text there
    (`line_before`, the plan's `leading` included). A block's indentation is left out:
    the model writes it itself. A prompt that ends in indentation ends inside what the
    tokenizer would have made one whitespace token with the statement's first word, and
    the default model then answers nothing or starts one column too deep (measured on
    this project's problems: 11 of 40 fills empty with the cursor at the indentation,
    none at column 0)."""
    if plan.kind == "block" and line_before and not line_before.strip(" \t"):
        return ""
    return line_before
