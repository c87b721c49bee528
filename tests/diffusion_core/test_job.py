"""The job protocol (diffusion_core.generation.job) and the context store's slots, the store without a model."""
import ast
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from diffusion_core.generation import causal, diffusion_job, job
from diffusion_core.generation.context_store import ContextStore
from diffusion_core.generation.engine import Engine, FillParams, HoleSpec
from diffusion_core.generation.fill_types import FillStats

ROOT = Path(__file__).resolve().parents[2]
JOB, OTHER = SimpleNamespace(warm=False), SimpleNamespace(warm=False)  # owners that are not warm-ups
PROTOCOL = [name for name in vars(job.Job) if not name.startswith("_")] + list(job.Job.__annotations__)


class FakeCache:
    """What a slot needs of a KVCache: a fill level, truncate and clone."""

    def __init__(self, n: int = 0):
        self.n = n

    def truncate(self, n: int) -> None:
        assert 0 <= n <= self.n
        self.n = n

    def clone(self, extra: int = 0) -> "FakeCache":
        return FakeCache(self.n)


def encoded(store: ContextStore, ids: list[int], owner=None):
    """Claim a slot for ids and pretend its owner encoded all of them, then give it back."""
    t = torch.tensor(ids)
    slot = store.claim(t, FillStats(), owner, lambda cap: FakeCache())
    slot.cache.n, slot.ids, slot.target = len(ids), t, None
    if owner is None:
        slot.release()
    return slot


def test_a_slot_is_reused_by_longest_prefix_and_cloned_while_in_use():
    store = ContextStore(size=2)
    first = encoded(store, [1, 2, 3, 4, 5, 6])
    stats = FillStats()
    again = store.claim(torch.tensor([1, 2, 3, 4, 9]), stats, JOB, lambda cap: FakeCache())
    assert again is first and again.cache.n == 4 and stats.reused_tokens == 4
    assert again.target.tolist() == [1, 2, 3, 4, 9] and again.left() == 1 and again.owner is JOB
    beside = store.claim(torch.tensor([1, 2, 3, 7]), FillStats(), OTHER, lambda cap: FakeCache())
    assert beside is not first and beside.cache.n == 3  # held by another job: a copy of its prefix
    again.release([1, 2, 3, 4])
    assert not again.in_use and again.owner is None and again.target is None and again.ids.tolist() == [1, 2, 3, 4]


def test_a_different_document_gets_a_fresh_slot_and_the_store_keeps_its_size():
    store = ContextStore(size=2)
    a = encoded(store, [1, 2, 3, 4, 5, 6])
    held = encoded(store, [1, 8, 8, 8, 8, 8], owner=OTHER)  # shares 1 of 6: not cut down
    assert held is not a
    encoded(store, [5, 5, 5])
    assert len(store.slots) == 2 and held in store.slots and a not in store.slots  # the oldest idle one goes
    store.forget()
    assert store.slots == []


@pytest.fixture()
def causal_engine(tiny_dir):
    """The tiny model on the causal layout (its tokenizer has the frame's markers)."""
    eng = Engine.load(tiny_dir, "cpu")
    eng.config.layout = "causal"
    eng.__init__(eng.loaded)
    return eng


def test_every_job_kind_has_the_protocol(engine, causal_engine):
    jobs = [engine.begin(["a = ", "\n"], [HoleSpec(4)], lazy=True),
            engine.begin(["a = ", "\n"], [HoleSpec(4)], FillParams(cache="none")),
            engine.warm(["b = ", "\n"], budget=4),
            causal_engine.begin(["a = ", "\n"], [HoleSpec(4)], FillParams(strategy="ar"), lazy=True)]
    assert [type(j) for j in jobs] == [diffusion_job.DiffusionJob, diffusion_job.DiffusionJob, job.WarmJob,
                                       causal.CausalJob]
    for j in jobs:
        missing = [name for name in PROTOCOL if not hasattr(j, name)]
        assert not missing, (type(j).__name__, missing)
        j.finish()
        assert j.done and j.slot is None  # a finished job holds no slot


def test_jobs_never_import_the_engine():
    """The jobs get a JobEnv, not the Engine: no import of engine, even for annotations."""
    for name in ("causal.py", "diffusion_job.py", "job.py", "context_store.py"):
        tree = ast.parse((ROOT / "diffusion_core" / "generation" / name).read_text(encoding="utf-8"))
        mods = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert "engine" not in mods and "diffusion_core.generation.engine" not in mods, name
