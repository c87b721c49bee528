"""One benchmark fill through the product path, timed, and its score against the truth.

Owns calling Engine.fill for one hole (a CoreError becomes an empty fill with its
message, so one bad hole never stops a benchmark), and scoring a finalized fill of a
held-out hole: exact match, edit similarity, and syntax validity (the document with
the fill has no more ERROR/MISSING nodes than with the ground truth). Must not know
the command line, sweeps or reports.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from . import metrics as M
from diffusion_core.errors import CoreError


@dataclass
class TimedFill:
    """One benchmark fill: the model's raw text, its wall time, forwards and encode time."""

    raw: str
    ms: float
    forward_passes: int
    encode_ms: float
    error: str = ""


def fill(engine, segments: list[str], budget: int, params, stop: dict | None = None) -> TimedFill:
    """One timed Engine.fill of a single hole between segments[0] and segments[1];
    stop: the hole's stop rule (`protocol.STOP_KEYS`), as the pipeline sends it."""
    from diffusion_core.generation.engine import HoleSpec

    t0 = time.perf_counter()
    try:
        res = engine.fill(segments, [HoleSpec(budget=int(budget), **(stop or {}))], params)
    except CoreError as exc:
        return TimedFill("", (time.perf_counter() - t0) * 1e3, 0, 0.0, str(exc))
    ms = (time.perf_counter() - t0) * 1e3
    return TimedFill(res.texts[0], ms, res.stats.forward_passes, res.stats.encode_ms)


def errors_with(hole, text: str) -> int | None:
    """ERROR/MISSING nodes of the hole's document with `text` in the hole (None: no tree)."""
    from grammars.postprocess import count_errors

    _, tree = hole.doc.reparse_with(hole.plan.start_byte, hole.plan.end_byte, text.encode("utf-8", "surrogatepass"))
    return None if tree is None else count_errors(tree.root_node)


def score(hole, text: str, truth_errors: int | None) -> dict:
    """exact, edit_sim and valid (no more syntax errors than the truth) of a finalized fill."""
    errors = errors_with(hole, text) if truth_errors is not None else None
    return {"exact": M.exact_match(text, hole.truth), "edit_sim": M.edit_similarity(text, hole.truth),
            "valid": None if errors is None else errors <= truth_errors}
