"""Latency machinery: newest request wins per document, the focused document wins a
burst of requests for several, and an adaptive debounce.

Owns: which in-flight completion task belongs to which document, cancelling the
superseded one (pygls then answers it with RequestCancelled, -32800, and the core
client turns the task's CancelledError into a core-side ``cancel`` that lands within
one denoising step), and how long to wait before asking the core at all.

Must not know: LSP types, the core, grammars. Works on asyncio tasks and clocks.

Why it never starves: only a *newer request for the same document* cancels a task,
and the debounce is capped (``max_ms``), so the request sent when the user pauses is
never superseded and always reaches the core. Across documents, only a request that
arrives in the same burst for a document edited less recently is dropped (``Focus``).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

# Weight of the newest inter-request gap in the typing-rhythm average.
_GAP_EMA_ALPHA = 0.3
# Gaps longer than this are pauses, not typing rhythm, and are not averaged in.
_PAUSE_S = 1.0
# The debounce waits a little longer than the typical gap between keystrokes: while
# the user keeps typing at that rhythm the next key supersedes the request before it
# reaches the core (which would otherwise encode and start denoising a doomed fill
# per key), and after the last key the request starts one gap later (max_ms caps it).
_GAP_FRACTION = 1.25


class Latest:
    """Newest wins: one live completion task per key (a document uri)."""

    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task] = {}
        self.superseded = 0

    def claim(self, key: str) -> None:
        """Make the current task the live one for ``key``; cancel the previous one."""
        task = asyncio.current_task()
        assert task is not None, "claim() runs inside a request task"
        old = self._tasks.get(key)
        self._tasks[key] = task
        if old is not None and old is not task and not old.done():
            self.superseded += 1
            old.cancel("superseded by a newer request")

    def release(self, key: str) -> None:
        if self._tasks.get(key) is asyncio.current_task():
            del self._tasks[key]

    def cancel(self, key: str) -> None:
        """Cancel the live task of ``key`` (document closed or changed)."""
        old = self._tasks.pop(key, None)
        if old is not None and not old.done():
            old.cancel("document closed")

    def in_flight(self) -> int:
        return sum(1 for t in self._tasks.values() if not t.done())


# Requests for different documents that arrive this close together are one burst from one
# pause: Neovim 0.12-dev sends one per open buffer, each with the active window's cursor
# (its inline-completion autocmds are made without `buffer=`). A person cannot switch
# windows and pause again within it.
BURST_S = 0.25


class Focus:
    """Which document the user is working in, for automatic requests: of a burst of
    requests for several documents (BURST_S), the one for the most recently edited (or
    opened) document runs; the others are dropped, a live one cancelled. A request that
    comes alone always runs, whatever was edited last (the user moved to another file)."""

    def __init__(self) -> None:
        self._edited: dict[str, float] = {}
        self._recent: dict[str, tuple[float, asyncio.Task | None]] = {}  # uri -> (arrival, its task)
        self.dropped = 0

    def edited(self, key: str, now: float | None = None) -> None:
        self._edited[key] = time.monotonic() if now is None else now

    def forget(self, key: str) -> None:
        self._edited.pop(key, None)
        self._recent.pop(key, None)

    def admit(self, key: str, now: float | None = None) -> bool:
        """Called once per automatic request (inside its task); False: drop it (answer empty)."""
        now = time.monotonic() if now is None else now
        mine = self._edited.get(key, 0.0)
        burst = {k: v for k, v in self._recent.items() if k != key and now - v[0] < BURST_S}
        if any(self._edited.get(k, 0.0) > mine for k in burst):
            self.dropped += 1
            return False
        for k, (_, task) in burst.items():  # edited less recently: not the focused document
            if task is not None and not task.done():
                self.dropped += 1
                task.cancel("a request for a more recently edited document")
        self._recent = {k: v for k, v in self._recent.items() if now - v[0] < BURST_S}
        self._recent[key] = (now, asyncio.current_task())
        return True


@dataclass
class _Rhythm:
    last: float = 0.0
    gap_ema: float | None = None


@dataclass
class Debouncer:
    """Per-document delay that follows the typing rhythm, within [min_ms, max_ms]."""

    _docs: dict[str, _Rhythm] = field(default_factory=dict)

    def observe(self, key: str, now: float | None = None) -> None:
        """Record a request for ``key`` (call once per request)."""
        now = time.monotonic() if now is None else now
        r = self._docs.setdefault(key, _Rhythm())
        if r.last:
            gap = now - r.last
            if gap < _PAUSE_S:
                r.gap_ema = gap if r.gap_ema is None else (
                    _GAP_EMA_ALPHA * gap + (1 - _GAP_EMA_ALPHA) * r.gap_ema
                )
        r.last = now

    def delay_s(self, key: str, min_ms: int, max_ms: int) -> float:
        r = self._docs.get(key)
        gap_ms = 0.0 if r is None or r.gap_ema is None else r.gap_ema * 1000 * _GAP_FRACTION
        lo, hi = min(min_ms, max_ms), max(min_ms, max_ms)
        return max(lo, min(hi, gap_ms)) / 1000.0

    def forget(self, key: str) -> None:
        self._docs.pop(key, None)

    async def wait(self, key: str, min_ms: int, max_ms: int) -> None:
        delay = self.delay_s(key, min_ms, max_ms)
        if delay > 0:
            await asyncio.sleep(delay)
