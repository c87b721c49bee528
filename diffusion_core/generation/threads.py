"""How many CPU threads torch uses for each kind of engine work, chosen by measurement.

Owns: ``ThreadChoice``, the engine's per-kind ("encode": a chunk of context, "decode":
one denoising or AR step) choice between one thread and all of the machine's, from the
recent cost of each; ``resolve`` of the ``--threads`` value (0: this choice; N: always N).

Why measure rather than fix a number (evaluation/bench_threads.py, 2-core dev VM, default
model, fp32; docs/benchmarks.md): a decode step costs 129 ms on one thread and 217 ms on
two on a quiet machine, 530 ms beside one busy neighbour; a 512-token encode costs 2.4 s
on one thread and 1.3 s on two when quiet but 4.0 s on two beside the neighbour. So the
best count differs by kind of work and by what else runs, and a shared machine's load
changes by the minute: each kind keeps a moving average of its cost per unit (token or
step) at each count, takes the cheaper, and retries the other every EXPLORE_EVERY units
so a change of load is noticed within seconds.

Must not know: the model, the scheduler. It sets ``torch.set_num_threads`` only through
the ``apply`` function it is given, so the tests drive it without torch.
"""
from __future__ import annotations

import os
import time
from typing import Callable

# One unit in this many runs at the count that is not the current best, times the square of
# how much dearer that count measured (capped at EXPLORE_MAX): beside a busy neighbour a
# two-thread decode step cost 3.1 s against 0.13 s on one thread (load 6), so retrying it
# every 8 steps would have added 0.4 s a step; measured 1.7x dearer it is retried every 23.
EXPLORE_EVERY = 8
EXPLORE_MAX = 512
# Weight of the newest cost in each count's moving average.
ALPHA = 0.3


class ThreadChoice:
    def __init__(self, fixed: int = 0, cpus: int | None = None, apply: Callable[[int], None] | None = None,
                 clock: Callable[[], float] = time.perf_counter):
        cpus = cpus or os.cpu_count() or 1
        self.fixed = fixed
        self.options = [fixed] if fixed > 0 else sorted({1, cpus})
        self.cost: dict[tuple[str, int], float] = {}  # (kind, threads) -> seconds per unit, averaged
        self.units: dict[str, int] = {}
        self._explored: dict[str, int] = {}  # units of each kind when its other count was last retried
        self.current = 0
        self._apply = apply
        self._clock = clock

    def pick(self, kind: str) -> int:
        """The thread count for the next unit of ``kind`` (set through ``apply``)."""
        n = self._choose(kind)
        if n != self.current and self._apply is not None:
            self._apply(n)
        self.current = n
        return n

    def _choose(self, kind: str) -> int:
        if len(self.options) == 1:
            return self.options[0]
        tried = [n for n in self.options if (kind, n) in self.cost]
        if len(tried) < len(self.options):
            # One thread first (never the worst measured: beside a busy neighbour more
            # threads cost 1.7-24x), the other count first tried after EXPLORE_EVERY units,
            # so a user's first requests never pay for the experiment.
            done = self.units.get(kind, 0)
            if done < EXPLORE_EVERY:
                return self.options[0]
            self._explored[kind] = done
            return next(n for n in self.options if n not in tried)
        best = min(self.options, key=lambda n: self.cost[(kind, n)])
        other = next(n for n in self.options if n != best)
        ratio = self.cost[(kind, other)] / max(self.cost[(kind, best)], 1e-9)
        every = int(min(EXPLORE_MAX, EXPLORE_EVERY * max(1.0, ratio) ** 2))
        done = self.units.get(kind, 0)
        if done - self._explored.get(kind, 0) >= every:
            self._explored[kind] = done
            return other
        return best

    def record(self, kind: str, threads: int, seconds: float, units: int = 1) -> None:
        """What ``units`` of ``kind`` cost at ``threads``."""
        if units <= 0:
            return
        per = seconds / units
        key = (kind, threads)
        old = self.cost.get(key)
        self.cost[key] = per if old is None else ALPHA * per + (1 - ALPHA) * old
        self.units[kind] = self.units.get(kind, 0) + 1

    def timed(self, kind: str, units: int, work: Callable[[], object]) -> object:
        """Run ``work`` (``units`` tokens or steps of ``kind``) at the chosen count and record its cost."""
        n = self.pick(kind)
        t0 = self._clock()
        try:
            return work()
        finally:
            self.record(kind, n, self._clock() - t0, units)

    def summary(self) -> dict:
        """For engine info: the mode and each kind's current choice and costs (ms per unit)."""
        kinds = sorted({k for k, _ in self.cost})
        return {"mode": f"fixed {self.fixed}" if self.fixed > 0 else "auto", "options": list(self.options),
                "costs_ms": {k: {str(n): round(self.cost[(k, n)] * 1e3, 2) for n in self.options if (k, n) in self.cost}
                             for k in kinds}}


def resolve(threads: int | None) -> int:
    """A ``--threads`` value: 0 or None for the measured choice, N > 0 for N; ValueError otherwise."""
    if threads is None:
        return 0
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 0 or threads > 1024:
        raise ValueError(f"--threads {threads!r}: want 0 (chosen by measurement) or a thread count 1-1024")
    return threads
