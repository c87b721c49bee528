"""Answer fast, then grow: which context window a request sends, and the warm-up of the full one.

Owns, per document, whether the core is believed to hold the full context window for
where the user is now (its *key*: where the prefix window starts and the suffix text
after the cursor, which is what the shipped spm-variant order encodes first), and the one
background warm-up of that window (the core's ``warm`` method, at idle priority).

The rule (issue 25 item 2): on a CPU, a request whose full window is not held yet sends a
short prefix window (``context.coldPrefixBytes``) that a cold encode can afford inside the
latency target, and the full window is warmed in the background; once the core has
encoded it (the warm-up's reply, or a full-window fill), requests with that key send the
full window, whose encode is then reused. Typing keeps the key (the prefix only grows at
its end, the suffix after the cursor stays); a cursor move or a jump changes it, so the
next request is short again while the new full window warms. The server never sends a
full-window fill while that window is still being warmed: it sends the short one, and
the core runs the warm-up only while no fill waits (scheduler, idle priority).

Must not know: LSP types, the core's transport, torch.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

log = logging.getLogger(__name__)

Key = tuple[int, str]  # (byte where the full prefix window starts, the suffix segment's text)


@dataclass
class _DocWindow:
    held: set[Key] = field(default_factory=set)  # full windows the core holds (the latest few)
    warming: Key | None = None
    task: asyncio.Task | None = None


# Full-window keys remembered per document: the core's context store keeps four contexts
# (engine.CONTEXT_STORE_SIZE) for all documents together, so older keys are likely gone.
HELD_KEYS = 2


class Windows:
    def __init__(self) -> None:
        self._docs: dict[str, _DocWindow] = {}
        self.warmups = 0  # started
        self.warmed = 0  # finished with the whole window encoded

    def holds(self, uri: str, key: Key) -> bool:
        d = self._docs.get(uri)
        return d is not None and key in d.held

    def hold(self, uri: str, key: Key) -> None:
        """The core has encoded the full window ``key`` of ``uri`` (a full-window fill or warm-up)."""
        d = self._docs.setdefault(uri, _DocWindow())
        d.held.discard(key)
        d.held.add(key)
        while len(d.held) > HELD_KEYS:
            d.held.pop()

    def warm(self, uri: str, key: Key, start: Callable[[], Awaitable[dict]]) -> None:
        """Warm the full window ``key`` of ``uri`` in the background unless it is held or
        already warming; a warm-up of another key of this document is cancelled (the user
        moved on)."""
        d = self._docs.setdefault(uri, _DocWindow())
        if key in d.held or (d.warming == key and d.task is not None and not d.task.done()):
            return
        if d.task is not None and not d.task.done():
            d.task.cancel()
        d.warming = key
        self.warmups += 1
        d.task = asyncio.ensure_future(self._run(uri, key, start))

    async def _run(self, uri: str, key: Key, start: Callable[[], Awaitable[dict]]) -> None:
        try:
            reply = await start()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a warm-up is a hint: its failure only costs the next request time
            log.info("warm-up of %s failed: %s", uri, exc)
            return
        finally:
            d = self._docs.get(uri)
            if d is not None and d.warming == key:
                d.warming = None
        stats = reply.get("stats") if isinstance(reply, dict) else None
        if isinstance(stats, dict) and stats.get("context_tokens"):
            self.warmed += 1
            if uri in self._docs:
                self.hold(uri, key)

    def forget(self, uri: str) -> None:
        d = self._docs.pop(uri, None)
        if d is not None and d.task is not None and not d.task.done():
            d.task.cancel()

    def close(self) -> None:
        for uri in list(self._docs):
            self.forget(uri)

    def summary(self, uri: str) -> dict[str, Any]:
        d = self._docs.get(uri)
        return {"fullWindowsHeld": len(d.held) if d else 0, "warming": bool(d and d.task and not d.task.done())}
