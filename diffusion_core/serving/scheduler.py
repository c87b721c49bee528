"""Step-granular scheduler: many clients, one model, one engine thread.

Owns: the queue of fill tickets, admission (round-robin across clients, bounded), the
engine thread loop (begin, one ``step`` over every active job, answer the finished,
drop the cancelled between steps), out-of-memory isolation and the counters.

Must not know: sockets, msgpack, LSP, tensors. It drives any backend with
``begin(prepared) -> job``, ``step(jobs)``, ``job.done`` and ``job.result()``, so the
tests drive it with a fake engine.

Idle priority: a warm-up (``submit(..., idle=True)``, the core's ``warm`` method) is
begun and stepped only while no other ticket is waiting or active, so a real fill that
arrives preempts it after the step under way (one chunk of context at most); a client
holds at most ``max_idle_per_client`` of them, a newer one cancelling its oldest.

Why step granularity: a denoising request is a few dozen forward passes. Stepping every
active request once per iteration lets the engine batch them into one forward pass
(what ``batched=False`` turns off, for the benchmark) and lets a cancel or a newly
arrived request take effect after at most one step instead of a whole request.
"""

from __future__ import annotations

import collections
import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from diffusion_core import protocol

log = logging.getLogger("diffill.core.scheduler")


class Job(Protocol):
    done: bool

    def result(self) -> Any: ...


class Backend(Protocol):
    def begin(self, prepared: Any) -> Job: ...

    def step(self, jobs: list[Job]) -> None: ...


class Busy(Exception):
    """The queue is full; the message says which bound was hit."""


class EngineFailed(Busy):
    """The engine thread died (Scheduler.failed says why): no fill will be served here."""


@dataclass
class SchedulerConfig:
    max_batch: int = 8  # active (begun) jobs stepped together; more wait their turn
    max_queue: int = 64  # tickets waiting or active, all clients together
    max_per_client: int = 16  # so one flooding client cannot take the whole queue
    batched: bool = True  # False: step each job alone (benchmark baseline)
    # New jobs begun between two steps while others are mid-denoise. A job's context is
    # encoded by its own first steps, one chunk each (engine.ENCODE_STEP_CPU), so a cold
    # encode no longer stalls the others for its whole length, but each admitted job adds
    # a chunk to every step until it is encoded. With nothing active, a whole batch is admitted.
    admit_per_step: int = 2
    max_idle_per_client: int = 2  # warm-ups a client may have queued or running; a newer one cancels the oldest


@dataclass
class Outcome:
    """What a ticket ends with: a result, or an error code from protocol's E_* and a message."""

    result: Any = None
    code: str | None = None
    message: str = ""
    queue_ms: float = 0.0
    run_ms: float = 0.0
    max_batch: int = 0  # the largest batch this job was stepped in


@dataclass(eq=False)
class Ticket:
    client: Any
    prepared: Any
    on_done: Callable[[Outcome], None]
    submitted: float = field(default_factory=time.perf_counter)
    started: float = 0.0
    job: Any = None
    cancelled: bool = False
    finished: bool = False
    max_batch: int = 0
    idle: bool = False  # a warm-up: runs only while nothing else waits or runs

    def progress(self) -> dict:
        """Where the ticket stands, for a heartbeat (read from the event loop: plain values)."""
        job = self.job
        if job is None or self.started == 0.0:
            return {"phase": "queued"}
        read = getattr(job, "progress", None)
        return dict(read()) if read is not None else {"phase": "running"}


def is_out_of_memory(exc: BaseException) -> bool:
    # torch.cuda.OutOfMemoryError subclasses RuntimeError; matching the message also
    # catches the MPS and CPU allocator failures without importing torch here.
    return isinstance(exc, MemoryError) or "out of memory" in str(exc).lower()


def release_memory() -> None:
    """Give freed memory back: CUDA's cached blocks, and on glibc the heap's free pages.

    Why the heap: a core's private memory grew over a long session although the context
    store is bounded (docs/benchmarks.md, "The core's memory over a long session"): glibc
    keeps the pages of freed tensors of every size a request needed; ``malloc_trim``
    returns them to the OS. Called when the engine goes idle and after an out-of-memory
    error, never between two steps of a request."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
    if _malloc_trim is not None:
        _malloc_trim(0)


def _find_malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none (musl, macOS, Windows)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return getattr(libc, "malloc_trim", None)


_malloc_trim = _find_malloc_trim()


class Scheduler:
    """Thread-safe front (submit/cancel from any thread); the engine runs on its own thread."""

    def __init__(self, backend: Backend, config: SchedulerConfig | None = None,
                 on_failure: Callable[[str], None] | None = None,
                 on_idle: Callable[[], None] = release_memory):
        self.backend = backend
        # Called on the engine thread each time it runs out of work (see release_memory).
        self.on_idle = on_idle
        self.config = config or SchedulerConfig()
        self._cond = threading.Condition()
        self._waiting: dict[Any, collections.deque[Ticket]] = {}  # client -> FIFO, insertion order = turn order
        self._active: list[Ticket] = []
        self._admitted: list[Ticket] = []  # taken from _waiting, being begun (neither waiting nor active)
        self._idle: collections.deque[Ticket] = collections.deque()  # warm-ups waiting, oldest first
        # When the engine thread last finished a unit of work (a begin or a step); a
        # heartbeat reports how long ago that was while there is work (engine_idle_s).
        self.last_work = time.monotonic()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.counters = collections.Counter()
        # Set when the engine thread died of something no request explains (a BaseException
        # such as pyo3's PanicException): one line; on_failure(message) is told once, on the
        # engine thread, so the core can exit and a standby or restart take over.
        self.failed = ""
        self.on_failure = on_failure

    # ------------------------------------------------------------ front (any thread)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="diffill-engine", daemon=True)
        self._thread.start()

    def submit(self, client: Any, prepared: Any, on_done: Callable[[Outcome], None], idle: bool = False) -> Ticket:
        """Queue a fill (``idle``: a warm-up, see the module docstring); raises Busy when a
        bound is hit. on_done runs on the engine thread."""
        ticket = Ticket(client, prepared, on_done, idle=idle)
        with self._cond:
            if self.failed:
                raise EngineFailed(f"the core's engine failed ({self.failed}); a fresh core takes over")
            if self._stopping:
                raise Busy("the core is shutting down")
            if idle:
                mine = [t for t in list(self._idle) + self._active if t.idle and t.client == client]
                for old in mine[: max(0, len(mine) - self.config.max_idle_per_client + 1)]:
                    self._cancel_locked(old)
                self._idle.append(ticket)
                self.counters["warm_submitted"] += 1
                self._cond.notify()
                return ticket
            total = self._queued_locked()
            if total >= self.config.max_queue:
                self.counters["busy"] += 1
                raise Busy(f"core busy: {total} requests queued (limit {self.config.max_queue})")
            mine = len(self._waiting.get(client, ())) + sum(t.client == client for t in self._active)
            if mine >= self.config.max_per_client:
                self.counters["busy"] += 1
                raise Busy(f"core busy: this client has {mine} requests queued (limit {self.config.max_per_client})")
            self._waiting.setdefault(client, collections.deque()).append(ticket)
            self.counters["submitted"] += 1
            self._cond.notify()
        return ticket

    def cancel(self, ticket: Ticket) -> bool:
        """Cancel a ticket; a waiting one is answered now, an active one after the current step."""
        with self._cond:
            return self._cancel_locked(ticket)

    def _cancel_locked(self, ticket: Ticket) -> bool:
        if ticket.finished or ticket.cancelled:
            return False
        ticket.cancelled = True
        queue = self._waiting.get(ticket.client)
        if queue is not None and ticket in queue:
            queue.remove(ticket)
            if not queue:
                del self._waiting[ticket.client]
            self._finish_locked(ticket, Outcome(code=protocol.E_CANCELLED, message="request cancelled"))
        elif ticket in self._idle:
            self._idle.remove(ticket)
            self._finish_locked(ticket, Outcome(code=protocol.E_CANCELLED, message="request cancelled"))
        self._cond.notify()
        return True

    def cancel_client(self, client: Any) -> int:
        """Cancel every ticket of a client (its connection closed)."""
        with self._cond:
            tickets = (list(self._waiting.get(client, ())) + [t for t in self._idle if t.client == client]
                       + [t for t in self._active if t.client == client])
        return sum(self.cancel(t) for t in tickets)

    def engine_idle_s(self) -> float:
        """Seconds since the engine thread last finished a unit of work, while it has work
        (0 when it has none): what a heartbeat reports, so a wedged engine shows."""
        with self._cond:
            busy = bool(self._waiting or self._active or self._admitted or self._idle)
        return round(time.monotonic() - self.last_work, 3) if busy else 0.0

    def stop(self, timeout: float = 5.0) -> None:
        """Fail everything queued with 'shutting_down' and join the engine thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    def snapshot(self) -> dict:
        with self._cond:
            return {
                "waiting": sum(len(q) for q in self._waiting.values()),
                "active": len(self._active),
                "warming": len(self._idle) + sum(t.idle for t in self._active),
                "clients_waiting": len(self._waiting),
                "batched": self.config.batched,
                "max_batch": self.config.max_batch,
                "max_queue": self.config.max_queue,
                "counters": dict(self.counters),
                "failed": self.failed,
            }

    # ------------------------------------------------------------ engine thread

    def _queued_locked(self) -> int:
        return sum(len(q) for q in self._waiting.values()) + sum(not t.idle for t in self._active)

    def _finish_locked(self, ticket: Ticket, outcome: Outcome) -> None:
        if ticket.finished:
            return
        ticket.finished = True
        now = time.perf_counter()
        start = ticket.started or now
        outcome.queue_ms = (start - ticket.submitted) * 1000.0
        outcome.run_ms = (now - start) * 1000.0
        outcome.max_batch = ticket.max_batch
        kind = "cancelled" if outcome.code == protocol.E_CANCELLED else "failed" if outcome.code else "completed"
        self.counters["warm_" + kind if ticket.idle else kind] += 1  # warm-ups are counted apart
        try:
            ticket.on_done(outcome)
        except Exception:  # a broken callback must not kill the engine thread
            log.exception("on_done callback failed")

    def _admit_locked(self) -> list[Ticket]:
        """Waiting tickets to begin now: one per client per round, until the batch is full.

        A client that got a turn moves to the back of the order, so a client with many
        queued requests cannot starve one with a single request.
        """
        admitted = []
        busy = [t for t in self._active if not t.idle]
        limit = self.config.max_batch if not busy else self.config.admit_per_step
        while self._waiting and len(admitted) < limit and len(busy) + len(admitted) < self.config.max_batch:
            client = next(iter(self._waiting))
            queue = self._waiting.pop(client)
            admitted.append(queue.popleft())
            if queue:
                self._waiting[client] = queue  # re-inserted at the end: its next turn is last
        if not admitted and not busy and self._idle and not any(t.idle for t in self._active):
            admitted.append(self._idle.popleft())  # nothing else to do: one warm-up at a time
        return admitted

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # noqa: B036 - the thread is ending: say so, answer everyone
            self._engine_failed(exc)

    def _loop(self) -> None:
        worked = False
        while True:
            with self._cond:
                idle_now = worked and not (self._stopping or self._waiting or self._active or self._idle)
            if idle_now:
                # Outside the lock: a request arriving meanwhile is queued and begun after it.
                worked = False
                self.on_idle()
            with self._cond:
                while not self._stopping and not self._waiting and not self._active and not self._idle:
                    self._cond.wait()
                if self._stopping:
                    self._fail_all_locked()
                    return
                self._drop_cancelled_locked()
                self._admitted = self._admit_locked()
            for ticket in self._admitted:
                self._begin(ticket)
                self.last_work = time.monotonic()
                worked = True
            self._admitted = []
            with self._cond:
                self._drop_cancelled_locked()
                # Warm-ups step only while no real request is active (idle priority).
                batch = [t for t in self._active if not t.idle] or list(self._active)
            if batch:
                self._step(batch)
                self.last_work = time.monotonic()
                worked = True

    def _engine_failed(self, exc: BaseException) -> None:
        """The engine thread dies of an exception no per-request handler took (issue 22:
        pyo3's PanicException is a BaseException; the thread died and the core still said
        ready): every fill it held is answered, later ones are refused, and on_failure
        lets the core exit so a standby or a restart takes over."""
        message = f"{type(exc).__name__}: {protocol.one_line(exc)}"
        log.critical("the engine thread failed: %s", message, exc_info=exc)
        with self._cond:
            self.failed = message
            self._stopping = True
            self._fail_all_locked(protocol.E_ENGINE_FAILED, f"the core's engine failed ({message}); a fresh core takes over")
        if self.on_failure is not None:
            try:
                self.on_failure(message)
            except Exception:
                log.exception("on_failure callback failed")

    def _fail_all_locked(self, code: str = protocol.E_SHUTTING_DOWN, message: str = "the core is shutting down") -> None:
        for ticket in [t for q in self._waiting.values() for t in q] + list(self._idle) + self._active + self._admitted:
            self._finish_locked(ticket, Outcome(code=code, message=message))
        self._waiting.clear()
        self._idle.clear()
        self._active.clear()
        self._admitted = []

    def _drop_cancelled_locked(self) -> None:
        for ticket in [t for t in self._active if t.cancelled]:
            self._active.remove(ticket)
            self._abandon(ticket)
            self._finish_locked(ticket, Outcome(code=protocol.E_CANCELLED, message="request cancelled"))

    def _abandon(self, ticket: Ticket) -> None:
        """A cancelled job leaves the engine (``backend.drop``, when it has one): what it
        encoded stays in the engine's store for the next request (engine thread only)."""
        drop = getattr(self.backend, "drop", None)
        if drop is not None and ticket.job is not None and not ticket.job.done:
            try:
                drop(ticket.job)
            except Exception:  # a broken drop must not kill the engine thread
                log.exception("dropping a cancelled job failed")

    def _begin(self, ticket: Ticket) -> None:
        ticket.started = time.perf_counter()
        try:
            ticket.job = self.backend.begin(ticket.prepared)
        except Exception as exc:
            with self._cond:
                self._finish_locked(ticket, self._error_outcome(exc))
            return
        with self._cond:
            self._active.append(ticket)
        self._answer_done([ticket])  # a job may be done at begin (all budgets tiny)

    def _step(self, batch: list[Ticket]) -> None:
        groups = [batch] if self.config.batched else [[t] for t in batch]
        for group in groups:
            jobs = [t.job for t in group if not t.job.done]
            if jobs:
                self._step_group(group, jobs)
            self._answer_done(group)

    def _step_group(self, group: list[Ticket], jobs: list[Job]) -> None:
        for ticket in group:
            ticket.max_batch = max(ticket.max_batch, len(jobs))
        try:
            self.backend.step(jobs)
            self.counters["steps"] += 1
            self.counters["stepped_jobs"] += len(jobs)
            return
        except Exception as exc:
            if len(group) == 1:
                with self._cond:
                    self._active.remove(group[0])
                    self._finish_locked(group[0], self._error_outcome(exc))
                return
            # The batch failed as a whole (e.g. out of memory for the combined shape):
            # retry each job alone so only the one at fault gets the error. A job the
            # failed call already advanced just gets one more step, which is harmless.
            log.warning("batched step of %d jobs failed (%s); retrying one by one", len(jobs), exc)
            self.counters["batch_retries"] += 1
        for ticket in group:
            if not ticket.job.done:
                self._step_group([ticket], [ticket.job])

    def _answer_done(self, group: list[Ticket]) -> None:
        for ticket in group:
            if ticket.finished or not ticket.job.done:
                continue
            try:
                outcome = Outcome(result=ticket.job.result())
            except Exception as exc:
                outcome = self._error_outcome(exc)
            with self._cond:
                if ticket in self._active:
                    self._active.remove(ticket)
                self._finish_locked(ticket, outcome)

    def _error_outcome(self, exc: Exception) -> Outcome:
        name = type(exc).__name__
        if name == "FillCancelled":
            return Outcome(code=protocol.E_CANCELLED, message="request cancelled")
        if is_out_of_memory(exc):
            release_memory()
            return Outcome(code=protocol.E_OUT_OF_MEMORY, message=f"out of memory on this request: {protocol.one_line(exc)}")
        if isinstance(exc, ValueError):  # CoreError is a ValueError: the user's input is at fault
            return Outcome(code=protocol.E_INVALID_PARAMS, message=protocol.one_line(exc))
        log.error("engine failed", exc_info=exc)
        return Outcome(code=protocol.E_INTERNAL, message=f"{name}: {protocol.one_line(exc)}")
