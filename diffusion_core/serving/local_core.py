"""An in-process core: the ``CoreConnection`` shape (start, fill, status, close) over one ``Engine``.

Owns: answering ``fill(segments, budgets, params)`` the way the core process answers
a socket client (``{"texts", "stats"}``), for the callers that run the model in their
own process: ``diffill fill`` and ``diffill bench quality``. So they go through the same
fill pipeline (``lsp_server.pipeline``) as the language server, and a benchmark
measures what an editor gets.

Must not know: grammars, LSP, sockets. The engine call is synchronous: the caller's
event loop waits for it (one request at a time, as a command line runs).
"""

from __future__ import annotations

import time
from typing import Callable

from diffusion_core.errors import CoreError
from diffusion_core.generation.engine import Engine, FillParams, HoleSpec, StepInfo
from diffusion_core.protocol import STOP_KEYS
from diffusion_core.serving.scheduler import release_memory


class LocalCore:
    def __init__(self, engine: Engine, on_step: Callable[[StepInfo], None] | None = None,
                 base: FillParams | None = None) -> None:
        self.engine = engine
        self.on_step = on_step
        self.base = base or FillParams()  # what a request's params override (a benchmark's sampler flags)
        self.fills = 0

    @classmethod
    def load(cls, model_dir: str | None = None, device: str = "auto",
             progress: Callable[[int, int, str], None] | None = None, **kw) -> "LocalCore":
        """The engine of a model folder or .gguf file; ``progress(done, total, what)`` is
        told about a first-time GGUF hash and conversion (loader.load_model)."""
        weights = kw.pop("weights", "auto")
        return cls(Engine.load(model_dir=model_dir, device=device, progress=progress, weights=weights), **kw)

    async def start(self) -> None:  # the engine is loaded already
        return None

    async def fill(self, segments: list[str], budgets: list[int], params: dict,
                   request_id: str | None = None, stops: list[dict] | None = None,
                   on_progress: Callable[[dict], None] | None = None) -> dict:
        """The engine's fill as the core process replies it; a ``CoreError`` propagates.
        ``stops``: one map of ``protocol.STOP_KEYS`` per hole, as on the wire. The engine
        runs in this thread, so there are no heartbeats: ``on_progress`` is never called
        (``on_step`` reports the steps)."""
        t0 = time.perf_counter()
        rules = stops if stops is not None else [{} for _ in budgets]
        if len(rules) != len(budgets):
            raise CoreError(f"stops: {len(rules)} rules for {len(budgets)} holes")
        holes = [HoleSpec(budget=int(b), **{k: int(v) for k, v in r.items() if k in STOP_KEYS})
                 for b, r in zip(budgets, rules)]
        res = self.engine.fill(segments, holes,
                               params=FillParams.from_dict({**self.base.as_dict(), **params}), on_step=self.on_step)
        if len(res.texts) != len(budgets):
            raise CoreError(f"engine answered {len(res.texts)} fills for {len(budgets)} holes")
        self.fills += 1
        stats = res.stats.as_dict()
        stats["core_ms"] = (time.perf_counter() - t0) * 1000
        release_memory()  # idle until the next call, as a core's engine is when its queue empties
        return {"texts": list(res.texts), "stats": stats}

    async def status(self) -> dict:
        info = self.engine.info()
        return {"model": info.get("model"), "device": info.get("device"), "info": info}

    async def close(self) -> None:
        return None
