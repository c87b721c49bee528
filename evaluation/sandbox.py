"""The sandboxed runner of execution-based benchmarks: one program, one subprocess.

Owns running untrusted, model-written Python: always in a fresh interpreter (never
in-process), in an empty temporary directory, isolated mode (`-I`: no user site, no
PYTHON* variables, no cwd on sys.path), with an address-space limit, a CPU-time limit,
an output-file size limit and no core dumps (resource.setrlimit in preexec_fn), and a
wall-clock timeout after which its whole process group is killed. This is a guard
against accidents (an infinite loop, a memory hog, a fork loop that never ends), not a
security boundary against hostile code. Must not know models, datasets or metrics.
"""
from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

TIMEOUT_S = 10.0  # wall clock per program; HumanEval tests take well under a second
MEMORY_MB = 1024  # address space; an interpreter with numpy-free tests needs < 100 MB
OUTPUT_BYTES = 1 << 20  # largest file (stdout/stderr) the program may write
_DETAIL_CHARS = 300  # tail of stderr kept to explain a failure

PASSED, FAILED, TIMEOUT = "passed", "failed", "timeout"


@dataclass(frozen=True)
class ExecResult:
    status: str  # "passed" | "failed" | "timeout"
    returncode: int | None
    detail: str  # last line(s) of stderr, or why it was stopped

    @property
    def passed(self) -> bool:
        return self.status == PASSED


def _limits(timeout_s: float, memory_mb: int):
    """preexec_fn: runs in the child between fork and exec, so only setrlimit calls
    (async-signal-safe enough; no locks, no imports)."""
    cpu = int(timeout_s) + 1
    mem = int(memory_mb) << 20

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        resource.setrlimit(resource.RLIMIT_FSIZE, (OUTPUT_BYTES, OUTPUT_BYTES))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the child leads its own session (start_new_session)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def run_program(source: str, timeout_s: float = TIMEOUT_S, memory_mb: int = MEMORY_MB) -> ExecResult:
    """Run `source` as a Python program under the limits; passed means exit status 0."""
    with tempfile.TemporaryDirectory(prefix="diffill-exec-") as tmp:
        prog = Path(tmp) / "program.py"
        prog.write_text(source, encoding="utf-8")
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONHASHSEED": "0", "LC_ALL": "C.UTF-8"}
        with open(Path(tmp) / "out.txt", "wb") as out, open(Path(tmp) / "err.txt", "wb") as err:
            try:
                proc = subprocess.Popen(
                    [sys.executable, "-I", "-B", str(prog)], cwd=tmp, env=env, stdin=subprocess.DEVNULL,
                    stdout=out, stderr=err, start_new_session=True, preexec_fn=_limits(timeout_s, memory_mb))
            except OSError as exc:
                return ExecResult(FAILED, None, f"could not start python: {exc}")
            try:
                code = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                return ExecResult(TIMEOUT, None, f"killed after {timeout_s:g} s")
        # Grandchildren the program left behind (it leads its own process group) go too.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        tail = (Path(tmp) / "err.txt").read_bytes()[-4096:].decode("utf-8", "replace").strip()
    if code == 0:
        return ExecResult(PASSED, 0, "")
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
        why = {"SIGXCPU": "CPU time limit", "SIGXFSZ": "output size limit", "SIGKILL": "killed"}.get(name, name)
        return ExecResult(FAILED, code, why)
    last = tail.splitlines()[-1] if tail else f"exit status {code}"
    return ExecResult(FAILED, code, last[-_DETAIL_CHARS:])
