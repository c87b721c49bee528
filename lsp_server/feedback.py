"""Counters, latency percentiles and the local accept/dismiss log.

Owns: what ``diffill/status`` reports about this server (requests, answers,
cancellations, cache hits, fills shown and accepts reported, p50/p95 latency) and the
JSON-lines log of shown fills that were accepted or dismissed. The log is a local
file only: nothing leaves the machine, and it records sizes and timings, never the
code itself.

Must not know: LSP types, the core, grammars.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path

from diffusion_core.protocol import percentile

log = logging.getLogger(__name__)

# Latencies kept for the percentiles: recent behaviour matters, memory stays flat.
_LATENCY_WINDOW = 1000
# Retired items an accept may still name; bounded so a long session stays flat.
_RECENT_ITEMS = 256


def _open_private(path: Path):
    """The log opened for appending, 0600 (sizes and timings only, but whose and when is
    nobody else's business), never through a planted link; diffill's own state folder is
    made (and kept) 0700. A folder the user chose for feedback.path keeps its mode."""
    folder = path.parent
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if folder == default_log_path().parent and folder.stat().st_uid == os.getuid():
        folder.chmod(0o700)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    os.fchmod(fd, 0o600)  # a log written by an older version was 0644
    return os.fdopen(fd, "a", encoding="utf-8")


def default_log_path() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(state) / "diffill" / "feedback.jsonl"


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


@dataclass
class Shown:
    """One item of a fill shown to the user, waiting for the client to report an accept."""

    id: str
    uri: str
    language: str
    chars: int
    lines: int
    latency_ms: float
    shown_at: float


class FeedbackLog:
    """Shown items by id; accept and dismiss lines appended to a local JSON-lines file.

    Counters (in ``Stats``): ``shown`` counts fills shown, ``accepted`` the accepts the
    client reported (the ``diffill.accepted`` command of an item). LSP has no way for a
    client to report a rejection, so none is counted; a fill replaced by the next one
    or closed without an accept is logged as ``dismiss`` (inferred, and named so)."""

    def __init__(self, path: Path | None, stats: Stats) -> None:
        self.path = path
        self._stats = stats
        self._pending: dict[str, list[Shown]] = {}  # by uri: the items of the last shown fill
        # Items no longer pending whose accept may still arrive (the client runs an
        # item's command after it sent the next request): id -> item, oldest first.
        self._recent: OrderedDict[str, Shown] = OrderedDict()
        self._next = 0

    def shown(self, uri: str, language: str, texts: list[str], latency_ms: float, *, continues: bool = False) -> list[str]:
        """Register a shown fill, one new id per item. The fill shown before for this
        document is dismissed, unless ``continues`` (the user typed into it and this
        is its rest, from the cache)."""
        self._stats.count("shown")
        prev = self._pending.pop(uri, None)
        if prev is not None:
            self._retire(prev, dismissed=not continues)
        items = []
        for text in texts:
            self._next += 1
            items.append(Shown(f"s{self._next}", uri, language, len(text), text.count("\n") + 1, latency_ms, time.time()))
        if items:
            self._pending[uri] = items
        return [item.id for item in items]

    def accepted(self, sid: str) -> bool:
        """The client reported the item ``sid`` accepted; False for an unknown or
        already accepted id."""
        for uri, items in list(self._pending.items()):
            for item in items:
                if item.id == sid:
                    del self._pending[uri]
                    self._retire([i for i in items if i is not item], dismissed=False)
                    self._accept(item)
                    return True
        item = self._recent.pop(sid, None)
        if item is None:
            return False
        self._accept(item)
        return True

    def closed(self, uri: str) -> None:
        prev = self._pending.pop(uri, None)
        if prev is not None:
            self._retire(prev, dismissed=True)

    def _accept(self, item: Shown) -> None:
        self._stats.count("accepted")
        self._write(item, "accept")

    def _retire(self, items: list[Shown], dismissed: bool) -> None:
        if dismissed and items:
            self._write(items[0], "dismiss")
        for item in items:
            self._recent[item.id] = item
        while len(self._recent) > _RECENT_ITEMS:
            self._recent.popitem(last=False)

    def _write(self, shown: Shown, event: str) -> None:
        if self.path is None:
            return
        record = {
            "time": round(time.time(), 3),
            "event": event,
            "id": shown.id,
            "language": shown.language,
            "chars": shown.chars,
            "lines": shown.lines,
            "latencyMs": round(shown.latency_ms, 1),
            "shownForS": round(time.time() - shown.shown_at, 2),
        }
        try:
            with _open_private(self.path) as fh:
                fh.write(json.dumps(record) + "\n")
        except OSError as exc:
            log.warning("feedback log %s: %s", self.path, exc)
            self.path = None  # tell once, then stop trying
