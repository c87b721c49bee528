"""The engine's thread count per kind of work (diffusion_core.generation.threads): the cheaper count
wins, the other is retried the less often the dearer it measured, a change of load is
followed, a fixed count is kept; and the engine really runs each kind at the count chosen."""
from __future__ import annotations

import pytest
import torch

from diffusion_core.generation import threads as T
from diffusion_core.generation.engine import FillParams, HoleSpec


class Machine:
    """A fake clock whose work costs depend on the thread count (the measured shape:
    decode cheaper on one thread, encode cheaper on two until a neighbour runs)."""

    def __init__(self):
        self.now = 0.0
        self.cost = {("decode", 1): 0.13, ("decode", 2): 0.22, ("encode", 1): 0.005, ("encode", 2): 0.0025}
        self.applied: list[int] = []
        self.current = 0

    def apply(self, n):
        self.applied.append(n)
        self.current = n

    def clock(self):
        return self.now

    def work(self, kind, units):
        def run():
            self.now += self.cost[(kind, self.current)] * units
        return run


def run_units(choice, m, kind, units, n):
    picks = []
    for _ in range(n):
        choice.timed(kind, units, m.work(kind, units))
        picks.append(choice.current)
    return picks


def test_each_kind_settles_on_its_cheaper_count_and_keeps_checking_the_other():
    m = Machine()
    choice = T.ThreadChoice(cpus=2, apply=m.apply, clock=m.clock)
    dec = run_units(choice, m, "decode", 1, 40)
    enc = run_units(choice, m, "encode", 256, 40)
    # One thread first; the other count tried once EXPLORE_EVERY units have run.
    assert dec[: T.EXPLORE_EVERY] == [1] * T.EXPLORE_EVERY and dec[T.EXPLORE_EVERY] == 2
    assert enc[: T.EXPLORE_EVERY] == [1] * T.EXPLORE_EVERY and enc[T.EXPLORE_EVERY] == 2
    dec, enc = dec[T.EXPLORE_EVERY - 1:], enc[T.EXPLORE_EVERY - 1:]
    assert dec[2:].count(1) >= 26 and enc[2:].count(2) >= 26
    # ... and the loser comes back, the less often the dearer it measured: 1.7x dearer,
    # about every EXPLORE_EVERY * 1.7^2 = 22 units.
    assert 0 <= dec[2:].count(2) <= 38 // 20 + 1
    # Twenty times dearer (two threads beside a busy neighbour): retried at most every 512.
    m.cost[("decode", 2)] = 2.6
    many = run_units(choice, m, "decode", 1, 600)
    assert many.count(2) <= 2
    # A neighbour starts: two threads now cost far more for encoding; the choice follows.
    m.cost[("encode", 2)] = 0.008
    later = run_units(choice, m, "encode", 256, 40)
    assert later[-16:].count(1) >= 14


def test_a_fixed_count_is_kept_and_bad_values_are_one_line():
    m = Machine()
    choice = T.ThreadChoice(fixed=3, cpus=8, apply=m.apply, clock=m.clock)
    m.cost.update({("decode", 3): 0.1})
    assert set(run_units(choice, m, "decode", 1, 10)) == {3}
    assert T.resolve(None) == 0 and T.resolve(4) == 4
    for bad in (-1, 2000, True, "2"):
        with pytest.raises(ValueError, match="--threads"):
            T.resolve(bad)


def test_the_engine_runs_each_kind_at_the_count_chosen(engine, monkeypatch):
    seen = []
    engine.encode_step_tokens = 8
    engine.set_threads(0)  # chosen by measurement
    real = engine.threads._apply
    engine.threads._apply = lambda n: (seen.append(n), real(n))
    ref_threads = torch.get_num_threads()
    try:
        job = engine.begin(["def f(x):\n    return x + " * 4, "\n"], [HoleSpec(budget=6)], FillParams(), lazy=True)
        while not job.done:
            engine.step([job])
        kinds = {k for k, _ in engine.threads.cost}
        assert kinds == {"encode", "decode"}
        assert seen and set(seen) <= set(engine.threads.options)
        engine.set_threads(1)
        assert torch.get_num_threads() == 1 and engine.threads.options == [1]
    finally:
        engine.set_threads(None)
        torch.set_num_threads(ref_threads)
