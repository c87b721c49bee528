"""The private core processes of one client: spawned, watched, replaced, swept.

Owns: starting ``python -m diffusion_core.serving.service`` on a private socket in a fresh 0700
folder, its stderr (load progress lines, the tail that explains an exit), the standby
(a second private core started ahead of need, connected and idle), promoting it when
the live core is lost, stopping and reaping cores, sweeping folders that dead servers
left, and the one wait rule for a core that is coming up (``start_deadline``).

Must not know: what the cores are asked (``core_client``), frames (``core_socket``),
torch, LSP types. From ``diffusion_core`` it imports only ``protocol``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import importlib.util
import logging
import os
import shutil
import socket
import stat
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from diffusion_core import protocol
from lsp_server.core_socket import CoreSocket, CoreUnavailable

log = logging.getLogger("diffill.core_client")

# The one wait rule for a core that is coming up (a start, a restart, a standby, a request
# waiting for any of them): it is given up START_TIMEOUT_S after the wait began or after the
# core's load progress last changed, whichever is later, and after MAX_START_S in all. A
# first conversion of the default model reports its progress every second, so it is waited
# for however long it takes (docs/benchmarks.md, "Core start"); a silent core is not.
START_TIMEOUT_S = 120.0
MAX_START_S = 3600.0

# Private cores live in <runtime dir>/core-XXXX/core.sock. A folder older than this whose
# socket is dead is a leftover of a server killed with its core, and is swept.
PRIVATE_DIR_PREFIX = "core-"
PRIVATE_SOCKET = "core.sock"
STALE_DIR_AGE_S = 600.0

# Every private core is warmed up before it says hello (service --warm-up): the first fill
# of a newly opened file must not also page in the weights and run each kernel for the
# first time. The standby (started once the live core has answered a fill, then waiting
# connected and idle) turns a crash into a swap of connections instead of a whole start;
# its price is its private memory only, the weights' pages are shared. Figures:
# docs/benchmarks.md, "Standby core".
STANDBY_ARGS = ("--warm-up",)


async def start_deadline(aw: Awaitable, timeout: float, progress_at: Callable[[], float]) -> Any:
    """Await a core coming up under the one wait rule (above): asyncio.TimeoutError once
    ``timeout`` has passed since the wait began or since ``progress_at()`` (when its load
    progress last changed, monotonic; 0.0 for none), whichever is later, MAX_START_S at most."""
    task = asyncio.ensure_future(aw)
    began = time.monotonic()
    try:
        while True:
            until = min(max(began, progress_at()) + timeout, began + MAX_START_S)
            left = until - time.monotonic()
            if left <= 0:
                raise asyncio.TimeoutError
            done, _ = await asyncio.wait({task}, timeout=left)
            if done:
                return task.result()
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


@dataclass
class Standby:
    """A private core started ahead of need (see STANDBY_ARGS); conn is set once it said hello."""

    proc: asyncio.subprocess.Process
    private_dir: str
    stderr_tail: collections.deque
    conn: CoreSocket | None = None
    info: dict | None = None


@dataclass
class CoreCommand:
    """What a private core is started with (``diffill core``'s flags)."""

    model_dir: str | None = None
    device: str = "auto"
    weights: str = "auto"  # protocol.WEIGHTS_SCHEMES
    threads: int = 0  # 0: chosen by measurement (diffusion_core.generation.threads)
    core_args: list[str] = field(default_factory=list)


# connect(address, proc, standby) -> (socket, hello): the client's open-and-shake-hands.
Connect = Callable[[protocol.Address, Any, Standby], Awaitable[tuple[CoreSocket, dict]]]


class Supervisor:
    """The live private core (``proc``, its folder and stderr tail) and its standby."""

    def __init__(self, command: CoreCommand, start_timeout: float,
                 on_progress: Callable[[str], None], spawn_task: Callable[[Any], asyncio.Task]):
        self.command = command
        self.start_timeout = start_timeout
        self._on_progress = on_progress  # the live core's load progress, one line
        self._spawn_task = spawn_task
        self.proc: asyncio.subprocess.Process | None = None
        self.private_dir: str | None = None
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=20)
        self.standby: Standby | None = None
        self.standby_start: asyncio.Task | None = None
        self.closed = False
        self._progress_seen: dict[int, tuple[int, str]] = {}  # pid -> its last load progress (done, what)
        self._progress_at: dict[int, float] = {}  # pid -> when that last changed (monotonic)

    # -- the live core ------------------------------------------------------------------

    def socket_path(self) -> str:
        if self.private_dir is None:
            self.private_dir = new_private_dir()
        return os.path.join(self.private_dir, PRIVATE_SOCKET)

    async def spawn(self) -> None:
        self.proc, self.stderr_tail = await self._launch(self.socket_path(), STANDBY_ARGS)

    def progress_at(self, proc: Any = None) -> float:
        """When ``proc``'s (default: the live core's) load progress last changed; 0.0 for never."""
        proc = proc if proc is not None else self.proc
        return self._progress_at.get(proc.pid, 0.0) if proc is not None else 0.0

    async def within_start_deadline(self, aw: Awaitable, proc_of: Callable[[], Any] | None = None) -> Any:
        """``start_deadline`` for the core ``proc_of()`` (default: the live one)."""
        return await start_deadline(aw, self.start_timeout, lambda: self.progress_at(proc_of() if proc_of else None))

    def exit_message(self, standby: Standby | None = None) -> str:
        proc, tail = (standby.proc, standby.stderr_tail) if standby is not None else (self.proc, self.stderr_tail)
        code = proc.returncode if proc is not None else None
        last = next((line for line in reversed(tail) if line.strip()), "")
        what = "standby" if standby is not None else "private"
        return f"the {what} core exited with code {code}" + (f": {last}" if last else "")

    def kill_now(self) -> None:
        """Kill the live core without waiting (asyncio's child watcher reaps it)."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()

    async def stop_live(self) -> None:
        proc, self.proc = self.proc, None
        await stop(proc)

    # -- launching ----------------------------------------------------------------------

    async def _launch(self, socket_path: str, extra: tuple[str, ...] = ()) -> tuple[asyncio.subprocess.Process,
                                                                                     collections.deque]:
        """Start a private core on socket_path; returns it and the deque its stderr lines go to."""
        c = self.command
        # --parent-pid: the core exits with us from its first instruction, also when we die
        # before its interpreter has started (service.main, lifeline.tie_to_parent).
        cmd = [sys.executable, "-m", "diffusion_core.serving.service", "--socket", socket_path, "--device", c.device,
               "--weights", c.weights, "--threads", str(c.threads),
               "--parent-pid", str(os.getpid()), "--load-progress"]
        if c.model_dir:
            cmd += ["--model", str(c.model_dir)]
        cmd += [*c.core_args, *extra]
        env = dict(os.environ)
        root = package_root()
        if root:
            env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        log.info("starting a private core: %s", " ".join(cmd))
        # stdout goes nowhere: the LSP stream is our own stdout and must stay clean.
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE, env=env)
        tail: collections.deque[str] = collections.deque(maxlen=20)
        self._spawn_task(self._pump_stderr(proc, tail))
        return proc, tail

    async def _pump_stderr(self, proc: asyncio.subprocess.Process, tail: collections.deque) -> None:
        assert proc.stderr is not None
        while line := await proc.stderr.readline():
            text = line.decode("utf-8", "replace").rstrip()
            if self._load_progress(proc, text):
                continue
            tail.append(text)
            log.debug("core: %s", text)

    def _load_progress(self, proc: asyncio.subprocess.Process, line: str) -> bool:
        """A load progress line of `proc`: when it changed, the start deadline runs from now,
        and the live core's is passed on (on_progress). False for any other line."""
        parsed = protocol.parse_load_progress(line)
        if parsed is None:
            return False
        done, total, what = parsed
        if self._progress_seen.get(proc.pid) != (done, what):
            self._progress_seen[proc.pid] = (done, what)
            self._progress_at[proc.pid] = time.monotonic()
            if proc is self.proc:
                share = f": {100 * done // total}% ({done / 1e6:,.0f}/{total / 1e6:,.0f} MB)" if total > 0 else ""
                self._on_progress(f"{what}{share}")
        return True

    # -- the standby core ---------------------------------------------------------------

    def start_standby(self, connect: Connect) -> None:
        self.standby_start = self._spawn_task(self._start_standby(connect))

    async def _start_standby(self, connect: Connect) -> None:
        folder = new_private_dir()
        path = os.path.join(folder, PRIVATE_SOCKET)
        launch = asyncio.ensure_future(self._launch(path, STANDBY_ARGS))
        try:
            proc, tail = await asyncio.shield(launch)
        except OSError as exc:
            shutil.rmtree(folder, ignore_errors=True)
            log.warning("cannot start a standby core: %s", exc)
            return
        except asyncio.CancelledError:  # close() while spawning: leave no core or folder behind
            with contextlib.suppress(Exception):
                await stop((await launch)[0])
            shutil.rmtree(folder, ignore_errors=True)
            raise
        standby = self.standby = Standby(proc, folder, tail)
        try:
            conn, hello = await self.within_start_deadline(
                connect(protocol.Address("unix", path=path), proc, standby), lambda: standby.proc)
        except (CoreUnavailable, asyncio.TimeoutError) as exc:
            # Not retried until the live core is next replaced: a standby that cannot start
            # would otherwise be started again after every fill.
            log.warning("the standby core did not start: %s", exc or "no answer")
            if self.standby is standby:
                self.standby = None
            await self.discard(standby)
            return
        except asyncio.CancelledError:
            self.standby = None if self.standby is standby else self.standby
            await asyncio.shield(self.discard(standby))
            raise
        standby.conn = conn
        standby.info = hello.get("info", {}) if isinstance(hello.get("info"), dict) else {}
        if self.standby is not standby or self.closed:
            await self.discard(standby)
            return
        log.info("standby core ready (pid %d)", proc.pid)

    async def take_standby(self) -> Standby | None:
        """The live core is lost: the standby, ready to be promoted (waiting for it if it is
        still starting), now the live core (its process, folder and stderr; the replaced one
        retired). None when there is none that works: the core is started afresh."""
        starting = self.standby_start
        if starting is not None and not starting.done():
            await asyncio.wait({starting}, timeout=self.start_timeout)  # neither raises nor cancels it
        standby, self.standby = self.standby, None
        if standby is None:
            return None
        if standby.conn is None or standby.conn.lost or standby.proc.returncode is not None or self.closed:
            await self.discard(standby)
            return None
        # The standby keeps its own folder, so its own cleanup at exit (service.serve removes
        # the folder of a private core) still matches; the endpoint changes with it.
        old_proc, self.proc, self.stderr_tail = self.proc, standby.proc, standby.stderr_tail
        old_dir, self.private_dir = self.private_dir, standby.private_dir
        self._spawn_task(_retire(old_proc, old_dir))
        return standby

    def lost_standby(self, conn: CoreSocket) -> bool:
        """The connection ``conn`` that ended was the standby's: it is dropped (True)."""
        standby = self.standby
        if standby is None or standby.conn is not conn:
            return False
        self.standby = None
        self._spawn_task(self.discard(standby))
        return True

    async def discard(self, standby: Standby) -> None:
        if standby.conn is not None:
            standby.conn.fail_pending("standby discarded")
        await stop(standby.proc)
        shutil.rmtree(standby.private_dir, ignore_errors=True)

    async def close(self) -> None:
        """Stop the standby (started or starting); the live core is the client's to stop."""
        self.closed = True
        if self.standby_start is not None:
            self.standby_start.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.standby_start
        standby, self.standby = self.standby, None
        if standby is not None:
            await self.discard(standby)

    def remove_folder(self) -> None:
        if self.private_dir:
            shutil.rmtree(self.private_dir, ignore_errors=True)
            self.private_dir = None


async def _retire(proc: asyncio.subprocess.Process | None, folder: str | None) -> None:
    """The replaced core: stopped if it still runs (it lost us, not necessarily its life), its folder removed."""
    await stop(proc)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


async def stop(proc: asyncio.subprocess.Process | None) -> None:
    """Terminate a core (SIGTERM: it shuts down cleanly), kill it if it lingers, reap it."""
    if proc is None or proc.returncode is not None:
        return
    for sig in (proc.terminate, proc.kill):
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                sig()
        try:
            await asyncio.wait_for(proc.wait(), 5.0)
            return
        except asyncio.TimeoutError:
            continue


def new_private_dir() -> str:
    """A fresh 0700 folder for one private core's socket (old leftovers swept first)."""
    runtime = protocol.runtime_dir()
    sweep_stale_private_dirs(runtime)
    return tempfile.mkdtemp(prefix=PRIVATE_DIR_PREFIX, dir=runtime)  # mode 0700


def sweep_stale_private_dirs(runtime: str, min_age: float = STALE_DIR_AGE_S) -> list[str]:
    """Remove private core folders left by servers that died with their core (kill -9 of
    both): older than min_age, holding nothing but a socket nobody listens on. A folder
    whose core still runs, or one just made by a server that is starting, is kept."""
    removed = []
    now = time.time()
    try:
        names = os.listdir(runtime)
    except OSError:
        return removed
    for name in names:
        path = os.path.join(runtime, name)
        try:
            st = os.lstat(path)
            if (not name.startswith(PRIVATE_DIR_PREFIX) or not stat.S_ISDIR(st.st_mode)
                    or st.st_uid != os.getuid() or now - st.st_mtime < min_age):
                continue
            entries = os.listdir(path)
            if set(entries) - {PRIVATE_SOCKET}:
                continue
            sock = os.path.join(path, PRIVATE_SOCKET)
            if entries and _listening(sock):
                continue
            if entries:
                os.unlink(sock)
            os.rmdir(path)
            removed.append(path)
        except OSError:
            continue
    return removed


def _listening(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(0.5)
    try:
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()


def package_root() -> str | None:
    """Folder holding the diffusion_core package, so ``python -m`` finds it uninstalled too."""
    spec = importlib.util.find_spec("diffusion_core")
    if spec is None or not spec.submodule_search_locations:
        return None
    return os.path.dirname(os.path.abspath(list(spec.submodule_search_locations)[0]))
