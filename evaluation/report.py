"""Presentation of the quality benchmark: text tables and the quality-latency plot.

Owns formatting rows of numbers for people (a plain aligned table per section) and
drawing the PNG (matplotlib with the Agg backend, imported only when a plot is asked
for). Must not know models, holes or how the numbers were measured.
"""
from __future__ import annotations

from pathlib import Path


def table(title: str, headers: list[str], rows: list[list]) -> str:
    """An aligned text table; floats with 3 decimals (ms with 1)."""
    def cell(v, h: str) -> str:
        if isinstance(v, float):
            return f"{v:.1f}" if h.endswith("ms") or h == "fwd" else f"{v:.3f}"
        return "-" if v is None else str(v)

    cells = [[cell(v, h) for v, h in zip(r, headers)] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    out = [title, line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    return "\n".join(out) + "\n"


def plot(path: str | Path, series: dict[str, list[dict]], title: str) -> None:
    """Edit similarity against mean latency, one marker style per series; each point
    is labelled with its "label" key. Points are dicts with edit_sim, ms_mean, label."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and in CI
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for (name, points), marker in zip(series.items(), "osD^v"):
        if not points:
            continue
        xs = [p["ms_mean"] for p in points]
        ys = [p["edit_sim"] for p in points]
        ax.plot(xs, ys, marker=marker, linestyle="-", label=name)
        for p, x, y in zip(points, xs, ys):
            ax.annotate(str(p["label"]), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel("mean latency per hole (ms)")
    ax.set_ylabel("edit similarity")
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(str(path))
    plt.close(fig)
