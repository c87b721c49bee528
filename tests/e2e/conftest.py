"""End-to-end fixtures: a tiny random model folder and one shared core on it.

Most tests connect their server to the shared core (``core.address``), as two
editors would, so each test starts only a language server; the first test starts
its own private core to cover that path too.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    from evaluation.tiny_model import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0)


@pytest.fixture(scope="session")
def shared_core(tmp_path_factory, tiny_model):
    """``diffill core`` on a unix socket; yields (address, process)."""
    sock = tmp_path_factory.mktemp("core") / "core.sock"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        [sys.executable, "-m", "diffill", "core", "--socket", str(sock), "--model", str(tiny_model),
         "--device", "cpu", "--log-level", "WARNING"],
        env=env, stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not sock.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if not sock.exists():
        proc.kill()
        pytest.fail(f"diffill core did not start (exit {proc.poll()})")
    yield f"unix:{sock}", proc
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def tiny_init(shared_core):
    """initializationOptions for a fast real core: the shared tiny core, short fills, no debounce."""
    return {"core": {"address": shared_core[0]}, "fill": {"maxTokens": 8}, "debounce": {"maxMs": 0}}


@pytest.fixture
def private_init(tiny_model):
    """initializationOptions that make the server start its own core on the tiny model."""
    return {"model": {"path": str(tiny_model), "device": "cpu"}, "fill": {"maxTokens": 8}, "debounce": {"maxMs": 0}}
