"""The quality sweeps: initial hole length, and sampler strategy/threshold/steps.

Owns which holes each sweep uses (prefixes of the held-out list), running every
point of a hole right after that hole's cold fill, so all points see the same cached
context and their latencies compare denoising alone, and the sweep rows. Must not
know the command line or how holes are chosen.
"""
from __future__ import annotations

from . import metrics as M
from .scoring import fill, score


class Sweeps:
    """Budget sweep on the first k single-line holes, sampler sweep on the first k
    holes; every point runs right after the hole's cold fill, so all points see the
    same warm (cached) context and their latencies compare denoising alone."""

    def __init__(self, budgets: list[int], base, params: list[tuple[str, str, object]], k: int):
        self.budgets, self.base, self.params, self.k = budgets, base, params, k
        self.singles_seen = 0
        self.budget_recs: dict[int, list] = {b: [] for b in budgets}
        self.param_recs: dict[str, list] = {label: [] for label, _, _ in params}

    def run(self, engine, i: int, hole, segs: list[str], truth_err) -> None:
        from grammars.postprocess import finalize

        def point(budget, p):
            out = fill(engine, segs, budget, p)
            rec = score(hole, finalize(hole.doc, hole.plan, out.raw), truth_err)
            rec.update(ms=out.ms, fwd=out.forward_passes)
            return rec

        if hole.kind == "single-line" and self.singles_seen < self.k:
            self.singles_seen += 1
            for b in self.budgets:
                self.budget_recs[b].append(point(b, self.base))
        if i < self.k:
            for label, _, p in self.params:
                self.param_recs[label].append(point(hole.plan.budget, p))

    def summary(self) -> tuple[dict, str]:
        from .report import table

        def agg(label, recs):
            return {"label": label, "holes": len(recs), "exact": M.rate(r["exact"] for r in recs),
                    "edit_sim": M.rate(r["edit_sim"] for r in recs), "valid": M.rate(r["valid"] for r in recs),
                    "ms_mean": M.mean([r["ms"] for r in recs]), "forward_passes_mean": M.mean([r["fwd"] for r in recs])}

        out = {"budget": [dict(agg(str(b), r), budget=b) for b, r in self.budget_recs.items() if r],
               "threshold": [agg(label, self.param_recs[label]) for label, s, _ in self.params if s == "threshold" and self.param_recs[label]],
               "topk": [agg(label, self.param_recs[label]) for label, s, _ in self.params if s == "topk" and self.param_recs[label]]}
        headers = ["point", "holes", "exact", "edit_sim", "valid", "ms", "fwd"]
        rows = [[p["label"], p["holes"], p["exact"], p["edit_sim"], p["valid"], p["ms_mean"], p["forward_passes_mean"]]
                for p in out["budget"]]
        text = table("sweep: initial hole length (budget, tokens) on single-line holes; ms = warm context", headers, rows)
        rows = [[p["label"], p["holes"], p["exact"], p["edit_sim"], p["valid"], p["ms_mean"], p["forward_passes_mean"]]
                for p in out["threshold"] + out["topk"]]
        text += "\n" + table("sweep: sampler (threshold tau / topk steps) on mixed holes; ms = warm context", headers, rows)
        return out, text + "\n"
