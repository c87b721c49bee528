"""A fake denoising core for the server tests, and a launcher that runs the real
server over stdio on it (``python tests/lsp_server/fakes.py``).

The fake answers every hole with a fixed text after ``steps`` sleeps of ``step_s``
(one sleep = one "denoising step", so a cancel lands at the next step like the real
core's), and counts fills, cancellations and the segments it was sent.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class FakeCore:
    def __init__(self, settings=None, on_event=None, *, text: str = "value = 42", steps: int = 3,
                 step_s: float = 0.01, fail_start: str = "", device: str = "") -> None:
        self.settings = settings
        self.text = text
        self.steps = steps
        self.step_s = step_s
        self.fail_start = fail_start
        self.fills = 0
        self.cancelled = 0
        self.completed = 0
        self.last_segments: list[str] = []
        self.last_budgets: list[int] = []
        self.last_params: dict = {}
        self.last_stops: list[dict] | None = None
        self.last_context = ""
        self.closed = False
        # What the core client knows from hello; "" (unknown) keeps the server's CPU-only
        # short windows off, as on every core that does not say (lsp_server.windows).
        self.server_info = {"device": device} if device else {}
        self.warms: list[list[str]] = []  # segments of each warm-up, in order
        self.warmed = 0

    async def start(self) -> None:
        await asyncio.sleep(0.01)
        if self.fail_start:
            raise RuntimeError(self.fail_start)

    async def fill(self, segments, budgets, params, request_id=None, stops=None, on_progress=None) -> dict:
        self.fills += 1
        self.last_stops = stops
        self.last_segments, self.last_budgets, self.last_params = list(segments), list(budgets), dict(params)
        try:
            for i in range(self.steps):
                await asyncio.sleep(self.step_s)
                if on_progress is not None:  # a heartbeat per step, as the core's
                    on_progress({"phase": "decoding", "steps": i + 1, "tokens": i + 1, "hole": 0,
                                 "holes": len(budgets), "engine_idle_s": 0.0})
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        self.completed += 1
        # A context cache as the core's, in characters: what the previous fill's context
        # shares with this one's from the start is reused, the rest encoded.
        text = "\x00".join(segments)
        reused = next((i for i, (a, b) in enumerate(zip(text, self.last_context)) if a != b),
                      min(len(text), len(self.last_context)))
        self.last_context = text
        return {"texts": [self.text for _ in budgets],
                "stats": {"steps": self.steps, "context_tokens": len(text), "reused_tokens": reused,
                          "encode_ms": 0.01 * (len(text) - reused)}}

    async def warm(self, segments, budget, params) -> dict:
        """The core's warm: the context held afterwards (the char-level cache above)."""
        self.warms.append(list(segments))
        for _ in range(self.steps):
            await asyncio.sleep(self.step_s)
        self.warmed += 1
        self.last_context = "\x00".join(segments)
        return {"texts": [], "stats": {"context_tokens": len(self.last_context)}}

    async def status(self) -> dict:
        return {"info": {"model": "fake", "device": "cpu"},
                "scheduler": {"waiting": 0, "active": 0},
                "fake": {"fills": self.fills, "cancelled": self.cancelled, "completed": self.completed,
                         "last_segments": self.last_segments, "last_params": self.last_params,
                         "last_stops": self.last_stops,
                         "warms": [[len(s) for s in w] for w in self.warms], "warmed": self.warmed}}

    async def close(self) -> None:
        self.closed = True


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from lsp_server.server import build_server

    opts = json.loads(os.environ.get("DIFFILL_FAKE_CORE", "{}"))

    def factory(settings, on_event):
        return FakeCore(settings, on_event, **opts)

    import logging

    logging.basicConfig(stream=sys.stderr, level=os.environ.get("DIFFILL_LOG_LEVEL", "WARNING"))
    sys.exit(build_server(factory).start_io())


if __name__ == "__main__":
    main()
