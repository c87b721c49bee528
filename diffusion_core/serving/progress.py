"""Progress on stderr for the command line: model loads, multi-hole fills, benchmarks, training.

Owns: one ``Progress`` object per long task. Nothing is written for a task that ends
within ``QUIET_S`` (a quick command stays silent, and its error stays one line). After
that, a terminal gets one line redrawn in place (``\\r``); a pipe or a log file gets
plain lines: one when the task is seen to take long, one every ``EVERY_S`` seconds of
counted progress, and one at the end.

Must not know: what the task is (the caller names it), tensors, LSP. Standard library
only, so every package's command may use it.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

QUIET_S = 1.0  # tasks shorter than this print nothing
EVERY_S = 10.0  # seconds between plain progress lines when stderr is not a terminal
_REDRAW_S = 0.25  # seconds between redraws on a terminal


class Progress:
    """``with Progress("loading model") as p: ... p.update(done, total)``."""

    def __init__(self, name: str, total: int = 0, stream: TextIO | None = None,
                 tty: bool | None = None, unit: str = "") -> None:
        self.name, self.total = name, total
        self.unit = unit  # "bytes": counts shown in MB; else plain counts
        self.done = 0
        self.what = ""  # what is being counted now (a task may have phases with their own totals)
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)()) if tty is None else tty
        self.t0 = time.monotonic()
        self.shown = False  # a line has been written (so the end gets one too)
        self._last = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> "Progress":
        self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._stop.set()
        self._thread.join()
        if self.shown:
            outcome = "done" if exc_type is None else "failed" if issubclass(exc_type, Exception) else "stopped"
            self._write(f"{self._text()} {outcome}", end=True)

    def update(self, done: int, total: int | None = None, what: str | None = None) -> None:
        """`done` of `total` so far; `what` names what is counted (a phase's own label:
        "checking sha256", "converting model.gguf"), shown before the count."""
        with self._lock:
            self.done = done
            if total is not None:
                self.total = total
            if what is not None:
                self.what = what
        now = time.monotonic()
        if now - self.t0 >= QUIET_S and (self.tty or now - self._last >= EVERY_S):
            self._write(self._text())

    def _watch(self) -> None:
        # One thread per task: a blocking call (a model load) still gets its line.
        if self._stop.wait(QUIET_S):
            return
        self._write(self._text())
        while self.tty and not self._stop.wait(_REDRAW_S):
            self._write(self._text())

    def _text(self) -> str:
        if self.unit == "bytes":
            mb = lambda n: f"{n / 1e6:,.0f}"
            count = f" {mb(self.done)}/{mb(self.total)} MB" if self.total else f" {mb(self.done)} MB" if self.done else ""
        else:
            count = f" {self.done}/{self.total}" if self.total else f" {self.done}" if self.done else ""
        what = f" {self.what}" if self.what else ""
        return f"{self.name}:{what}{count}, {time.monotonic() - self.t0:.0f} s"

    def _write(self, text: str, end: bool = False) -> None:
        with self._lock:
            self.shown = True
            self._last = time.monotonic()
            if self.tty:
                self.stream.write("\r\x1b[K" + text + ("\n" if end else ""))
            else:
                self.stream.write(text + "\n")
            self.stream.flush()
