"""Text-similarity metrics and summaries of the quality benchmark.

Owns how a fill is compared with its ground truth (normalisation, exact match,
Levenshtein edit similarity) and how per-hole numbers become a row (means, medians).
Must not know models, grammars or datasets: every function here is pure and works on
strings and floats.
"""
from __future__ import annotations

import statistics


def normalize(text: str) -> str:
    """The text as compared: trailing whitespace of each line and blank lines at both
    ends removed, so "x = 1  \\n" and "x = 1" are the same fill (editors trim them too)."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


def exact_match(fill: str, truth: str) -> bool:
    return normalize(fill) == normalize(truth)


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions of one character each).

    The common prefix and suffix cost nothing, so they are cut before the two-row
    dynamic programme; what is left is O(len(a) * len(b)) in pure Python, fine for the
    few hundred characters of a fill.
    """
    start = 0
    while start < len(a) and start < len(b) and a[start] == b[start]:
        start += 1
    end_a, end_b = len(a), len(b)
    while end_a > start and end_b > start and a[end_a - 1] == b[end_b - 1]:
        end_a -= 1
        end_b -= 1
    a, b = a[start:end_a], b[start:end_b]
    if len(a) < len(b):
        a, b = b, a  # the shorter string indexes the rows
    if not b:
        return len(a)
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def edit_similarity(fill: str, truth: str) -> float:
    """1 - Levenshtein / max length of the normalised texts; two empty texts are 1.0."""
    a, b = normalize(fill), normalize(truth)
    longest = max(len(a), len(b))
    return 1.0 if longest == 0 else 1.0 - levenshtein(a, b) / longest


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def rate(values) -> float | None:
    """Mean of the values that are not None (booleans count 0/1); None when none are."""
    vals = [float(v) for v in values if v is not None]
    return mean(vals) if vals else None
