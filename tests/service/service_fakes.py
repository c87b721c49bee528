"""A deterministic fake engine backend for scheduler and server tests.

It implements the backend surface the core server uses (prepare, begin, step, info,
reply) and records every step's batch size, so tests can see batching, cancellation
and fairness without torch.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

ALLOWED = {"steps", "oom", "delay", "fail"}


@dataclass
class FakeResult:
    texts: list[str]
    stats: dict


@dataclass(eq=False)
class FakeJob:
    segments: list[str]
    budgets: list[int]
    params: dict
    steps_done: int = 0
    batch_sizes: list[int] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.steps_done >= self.params.get("steps", 3)

    def result(self) -> FakeResult:
        assert self.done
        # The answer depends only on the request, never on how it was batched.
        texts = [f"{self.segments[i][-4:]}#{b}" for i, b in enumerate(self.budgets)]
        return FakeResult(texts, {"forward_passes": self.steps_done})


class FakeBackend:
    def __init__(self, step_delay: float = 0.0):
        self.step_delay = step_delay
        self.batches: list[int] = []
        self.begun: list[FakeJob] = []
        self.lock = threading.Lock()

    def prepare(self, fill):
        for key in fill.params:
            if key not in ALLOWED:
                raise ValueError(f"params.{key}: unknown key")
        return list(fill.segments), list(fill.budgets), dict(fill.params)

    def begin(self, prepared) -> FakeJob:
        segments, budgets, params = prepared
        if params.get("fail") == "begin":
            raise RuntimeError("begin exploded")
        if params.get("fail") == "invalid":
            raise ValueError("segments[0]: too long")
        job = FakeJob(segments, budgets, params)
        with self.lock:
            self.begun.append(job)
        return job

    def step(self, jobs: list[FakeJob]) -> None:
        if any(j.params.get("oom") for j in jobs):
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        with self.lock:
            self.batches.append(len(jobs))
        delay = max([self.step_delay] + [j.params.get("delay", 0.0) for j in jobs])
        if delay:
            time.sleep(delay)
        for job in jobs:
            assert not job.done, "a finished job was stepped"
            job.steps_done += 1
            job.batch_sizes.append(len(jobs))

    def info(self) -> dict:
        return {"model": "fake", "device": "cpu", "parameters": 0}

    def reply(self, result: FakeResult) -> dict:
        return {"texts": list(result.texts), "stats": dict(result.stats)}


def expected_texts(segments: list[str], budgets: list[int]) -> list[str]:
    return [f"{segments[i][-4:]}#{b}" for i, b in enumerate(budgets)]
