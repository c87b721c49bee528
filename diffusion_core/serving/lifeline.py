"""A process's ties to the outside: the parent it must not outlive, and the signals that stop it.

Owns: ``tie_to_parent`` (a core started by an editor exits when the editor dies, from its
first instruction on: PR_SET_PDEATHSIG on Linux, and a watcher thread everywhere) and
``stop_on_signals`` (SIGINT/SIGTERM raise ``Interrupted`` in the main thread, installed
before any work, so a load or a fill stops at its next Python instruction and the
command says so in one line instead of a traceback).

Must not know: sockets, the engine, asyncio (the core's event loop installs its own
handlers once it serves; they replace these). Standard library only.

Why both mechanisms: the kernel's parent-death signal arrives the moment the parent
dies, but it is tied to the *thread* that forked us (it also fires when that thread
exits while the process lives on), and it exists only on Linux. So the signal only says
"look": ``parent_gone`` asks whether the parent pid is still ours, and the watcher
thread asks the same every ``period`` seconds, which also catches a parent that died
before prctl ran (issue 22: the parent pid was read only after Engine.load, so a core
whose editor died during the load served forever).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from typing import Callable

# The signal the kernel sends when the parent dies (PR_SET_PDEATHSIG). Not SIGTERM: a
# SIGTERM always stops the process, while this one is ignored when the parent is alive
# (the forking thread ended, not the parent; see the module docstring).
PARENT_DEATH_SIGNAL = getattr(signal, "SIGUSR1", None)
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
WATCH_PERIOD_S = 0.1


class Interrupted(BaseException):
    """SIGINT / SIGTERM (or the parent's death) arrived; ``exit_code`` is 128 + the signal.

    A BaseException, as KeyboardInterrupt: ``except Exception`` handlers let it through."""

    def __init__(self, signum: int, why: str = ""):
        super().__init__(why or signal.Signals(signum).name)
        self.signum = signum
        self.exit_code = 128 + signum


_parent: int | None = None  # the pid tie_to_parent watches
# The signal Interrupted was raised for (once: later signals must not break the unwinding
# it started). Kept because library code may swallow the exception or turn it into
# another (an import of torch interrupted half-way re-raises ImportError), so the caller
# asks ``received()`` too.
_received: int | None = None


def parent_gone() -> bool:
    """True once the process tie_to_parent was given is no longer our parent."""
    return _parent is not None and os.getppid() != _parent


def received() -> int | None:
    """The stop signal that arrived since ``stop_on_signals`` (None: none)."""
    return _received


def _raise(signum: int, frame) -> None:
    global _received
    if _received is None:
        _received = signum
        raise Interrupted(signum)


def _raise_if_orphaned(signum: int, frame) -> None:
    if parent_gone():
        _raise(signal.SIGTERM, frame)


def stop_on_signals(signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> dict:
    """From now on these signals raise ``Interrupted`` in the main thread (call it first
    thing in main, before any work); PARENT_DEATH_SIGNAL does when the parent is gone.
    Returns the handlers replaced, for ``restore``."""
    global _received
    _received = None
    previous = {}
    for sig, handler in [(s, _raise) for s in signals] + (
            [(PARENT_DEATH_SIGNAL, _raise_if_orphaned)] if PARENT_DEATH_SIGNAL is not None else []):
        previous[sig] = signal.signal(sig, handler)
    return previous


def restore(previous: dict) -> None:
    """Put back the handlers ``stop_on_signals`` replaced (a main run inside a test)."""
    for sig, handler in previous.items():
        signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def _set_parent_death_signal(signum: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def tie_to_parent(parent: int, on_gone: Callable[[], None] | None = None, period: float = WATCH_PERIOD_S,
                  force_after: float | None = None, on_force: Callable[[], None] | None = None) -> bool:
    """Exit with ``parent``: the kernel signals us when it dies (Linux), a daemon thread
    checks every ``period`` seconds, and a parent already gone is noticed at once.
    ``on_gone`` (default: send ourselves PARENT_DEATH_SIGNAL, whose handler raises
    ``Interrupted`` or, once the core serves, shuts it down) runs once. With
    ``force_after``, a process still alive that many seconds later runs ``on_force`` (its
    cleanup) and ends with os._exit(128 + SIGTERM): an exception raised into a library (an
    import of torch, say) may be swallowed, and nobody is left to wait for an orderly exit.
    Returns whether the kernel's signal is armed."""
    global _parent
    _parent = parent
    armed = PARENT_DEATH_SIGNAL is not None and _set_parent_death_signal(PARENT_DEATH_SIGNAL)
    fired = threading.Event()

    def fire() -> None:
        if not fired.is_set():
            fired.set()
            (on_gone or (lambda: os.kill(os.getpid(), PARENT_DEATH_SIGNAL or signal.SIGTERM)))()

    def watch() -> None:
        while not parent_gone():
            time.sleep(period)
        fire()
        if force_after is not None:
            time.sleep(force_after)
            try:
                if on_force is not None:
                    on_force()
            finally:
                os._exit(128 + signal.SIGTERM)

    threading.Thread(target=watch, name="diffill-parent-watch", daemon=True).start()
    return armed
