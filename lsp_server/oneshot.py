"""``diffill fill FILE [--at LINE:COL] [--model DIR] [--device D] [--max-tokens N]``.

Owns: filling every hole of a file (grammars.find_holes), or the plan at one
position, jointly in one in-process engine call, post-processing each fill with
grammars.finalize and printing the whole resulting file to stdout. Any failure is one
line on stderr and a non-zero exit: 2 for bad arguments (missing file, bad position),
1 for nothing to fill at the position or a core failure.

LINE and COL are 1-based, COL counting characters (what editors show).

Must not know: LSP. Imports the engine lazily (it loads torch).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lsp_server.filling import clip_segments, tab_settings
from lsp_server.settings import Settings


class FillError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def parse_at(value: str) -> tuple[int, int]:
    line, sep, col = value.partition(":")
    if not sep or not line.isdigit() or not col.isdigit() or int(line) < 1 or int(col) < 1:
        raise FillError(f"--at wants LINE:COL (1-based), got {value!r}", 2)
    return int(line) - 1, int(col) - 1


def read_source(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FillError(f"{path}: no such file", 2) from None
    except OSError as exc:
        raise FillError(f"{path}: cannot read ({exc.strerror})", 2) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FillError(f"{path}: not utf-8 text (byte {exc.start})", 2) from None


def fill_file(path: Path, at: tuple[int, int] | None, model: str | None, device: str, marker: str,
              max_tokens: int | None = None) -> str:
    """The file's text with its holes (or the plan at ``at``) filled."""
    from grammars.document import Document
    from grammars.holes import find_holes
    from grammars.planner import plan, split_segments, with_plan_context
    from grammars.postprocess import finalize

    text = read_source(path)
    doc = Document(text, language_id=None, path=str(path))  # language from the extension
    if at is not None:
        if doc.offset_at(at[0], at[1], encoding="utf-32") is None:
            raise FillError(f"{path}: position {at[0] + 1}:{at[1] + 1} is outside the file", 2)
        p = plan(doc, at[0], at[1], encoding="utf-32")
        if p is None:
            raise FillError(f"{path}: nothing to fill at {at[0] + 1}:{at[1] + 1}", 1)
        plans = [p]
    else:
        plans = sorted(find_holes(doc, marker=marker), key=lambda p: p.start_byte)
        if not plans:
            print(f"diffill fill: {path}: no holes ({marker!r} or placeholders) found", file=sys.stderr)
            return text
    segments = with_plan_context(clip_segments(split_segments(doc, plans), Settings()), plans)
    budgets = [min(int(p.budget), max_tokens) if max_tokens else int(p.budget) for p in plans]
    texts = _run_engine(segments, budgets, model, device)
    source = doc.source
    out, last, unfilled = [], 0, 0
    for p, raw in zip(plans, texts):
        tab_size, spaces = tab_settings(p.indent)
        fill = finalize(doc, p, raw, tab_size=tab_size, insert_spaces=spaces)
        if not fill.strip():  # nothing usable: keep the hole as it was, so it can be retried
            unfilled += 1
            fill = source[p.start_byte : p.end_byte].decode("utf-8", "replace")
        out += [source[last : p.start_byte], fill.encode("utf-8")]
        last = p.end_byte
    out.append(source[last:])
    if unfilled:
        print(f"diffill fill: {path}: {unfilled} of {len(plans)} hole(s) left as they were (no usable fill)", file=sys.stderr)
    return b"".join(out).decode("utf-8")


def _run_engine(segments: list[str], budgets: list[int], model: str | None, device: str) -> list[str]:
    try:
        from diffusion_core.engine import Engine, FillParams, HoleSpec
    except ImportError as exc:
        raise FillError(f"the denoising core is not available: {exc}", 1) from None
    try:
        engine = Engine.load(model_dir=model, device=device)
        res = engine.fill(segments, [HoleSpec(budget=b) for b in budgets], params=FillParams())
    except Exception as exc:  # CoreError is a ValueError with one line; anything else too
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise FillError(f"core failed: {first}", 1) from None
    if len(res.texts) != len(budgets):
        raise FillError(f"core failed: {len(res.texts)} fills for {len(budgets)} holes", 1)
    return list(res.texts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="diffill fill", description=__doc__.split("\n")[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--at", metavar="LINE:COL", help="fill the plan at this 1-based position instead of the holes")
    parser.add_argument("--model", metavar="DIR", help="model folder (default: the bundled model)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    parser.add_argument("--hole-marker", default=Settings().hole_marker)
    parser.add_argument("--max-tokens", type=int, default=None, help="cap on each hole's token budget")
    args = parser.parse_args(argv)
    try:
        at = parse_at(args.at) if args.at else None
        if args.max_tokens is not None and args.max_tokens < 1:
            raise FillError(f"--max-tokens must be at least 1, got {args.max_tokens}", 2)
        result = fill_file(args.file, at, args.model, args.device, args.hole_marker, args.max_tokens)
    except FillError as exc:
        print(f"diffill fill: {exc}", file=sys.stderr)
        return exc.code
    sys.stdout.write(result)
    sys.stdout.flush()
    return 0
