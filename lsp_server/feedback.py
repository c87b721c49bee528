"""Counters, latency percentiles and the local accept/reject log.

Owns: what ``diffill/status`` reports about this server (requests, answers,
cancellations, cache hits, p50/p95 latency) and the JSON-lines log of shown fills that
were accepted or rejected. The log is a local file only: nothing leaves the machine,
and it records sizes and timings, never the code itself.

Must not know: LSP types, the core, grammars.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# Latencies kept for the percentiles: recent behaviour matters, memory stays flat.
_LATENCY_WINDOW = 1000


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in [0, 100]); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def default_log_path() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(state) / "diffill" / "feedback.jsonl"


@dataclass
class Shown:
    """A fill shown to the user, waiting for accept or reject."""

    id: str
    uri: str
    language: str
    chars: int
    lines: int
    latency_ms: float
    shown_at: float


class Stats:
    def __init__(self) -> None:
        self.counters: Counter[str] = Counter()
        self._latency_ms: deque[float] = deque(maxlen=_LATENCY_WINDOW)
        self._timings: dict[str, deque[float]] = {}  # plan_ms, core_ms, post_ms, cache_ms

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] += n

    def latency(self, ms: float) -> None:
        self._latency_ms.append(ms)

    def timing(self, name: str, ms: float) -> None:
        self._timings.setdefault(name, deque(maxlen=_LATENCY_WINDOW)).append(ms)

    def summary(self) -> dict:
        values = list(self._latency_ms)
        return {
            "latencyMs": {"p50": percentile(values, 50), "p95": percentile(values, 95), "n": len(values)},
            "stagesMs": {name: {"p50": percentile(list(v), 50), "p95": percentile(list(v), 95)}
                         for name, v in sorted(self._timings.items())},
            "counters": dict(sorted(self.counters.items())),
        }


class FeedbackLog:
    """Shown fills by id; accept/reject lines appended to a local JSON-lines file."""

    def __init__(self, path: Path | None, stats: Stats) -> None:
        self.path = path
        self._stats = stats
        self._pending: dict[str, Shown] = {}  # by uri: the last shown fill
        self._next = 0

    def shown(self, uri: str, language: str, text: str, latency_ms: float) -> str:
        """Register a shown fill; rejects the previous one of this document if still open."""
        self._next += 1
        sid = f"s{self._next}"
        prev = self._pending.get(uri)
        if prev is not None:
            self._write(prev, accepted=False)
        self._pending[uri] = Shown(sid, uri, language, len(text), text.count("\n") + 1, latency_ms, time.time())
        return sid

    def accepted(self, sid: str) -> bool:
        for uri, shown in list(self._pending.items()):
            if shown.id == sid:
                del self._pending[uri]
                self._write(shown, accepted=True)
                return True
        return False

    def current(self, uri: str) -> str | None:
        """Id of the fill still shown for ``uri`` (the user may be typing it)."""
        shown = self._pending.get(uri)
        return shown.id if shown else None

    def closed(self, uri: str) -> None:
        prev = self._pending.pop(uri, None)
        if prev is not None:
            self._write(prev, accepted=False)

    def _write(self, shown: Shown, accepted: bool) -> None:
        self._stats.count("accepted" if accepted else "rejected")
        if self.path is None:
            return
        record = {
            "time": round(time.time(), 3),
            "event": "accept" if accepted else "reject",
            "language": shown.language,
            "chars": shown.chars,
            "lines": shown.lines,
            "latencyMs": round(shown.latency_ms, 1),
            "shownForS": round(time.time() - shown.shown_at, 2),
        }
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
        except OSError as exc:
            log.warning("feedback log %s: %s", self.path, exc)
            self.path = None  # tell once, then stop trying
