"""The converted-model cache under faults (issue 22 items 4, 5, 8): two processes converting
at once, a conversion killed or stopped half-way, damaged folders, a GGUF changed under a
kept mtime. Tiny random GGUFs (tests/checkpoints/gguf_fixtures.py), real subprocesses.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from diffusion_core.loading import cache_folder, model_cache
from diffusion_core.errors import CoreError
from diffusion_core.loading.loader import load_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "checkpoints"))
from gguf_fixtures import make_gguf  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]

# One process converting: every progress label's first word on stdout, `delay` seconds per
# converted tensor (so the others can meet it half-way), the folder at the end.
CONVERT = r"""
import sys, time
from diffusion_core.loading import model_cache
from diffusion_core.serving import lifeline
lifeline.stop_on_signals()
def slow(done, total, what):
    print(what.split(" ")[0], flush=True)
    if what.startswith("converting"):
        time.sleep(float(sys.argv[2]))
try:
    print("folder", model_cache.gguf_folder(sys.argv[1], slow), flush=True)
except lifeline.Interrupted as e:
    print("interrupted", flush=True)
    sys.exit(e.exit_code)
"""


@pytest.fixture()
def cache_home(tmp_path, monkeypatch):
    home = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    return home


@pytest.fixture()
def tiny(tmp_path):
    return make_gguf(tmp_path / "tiny.gguf", seed=11)


def models_dir(cache_home: Path) -> Path:
    return cache_home / "diffill" / "models"


def start(path: Path, delay: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CONVERT, str(path), str(delay)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})


def wait_for(proc: subprocess.Popen, word: str, seen: list[str], timeout: float = 60.0) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line.strip())
        if line.startswith(word):
            return
    pytest.fail(f"never saw {word!r}: {seen} / {proc.stderr.read() if proc.poll() is not None else ''}")


def finish(proc: subprocess.Popen, seen: list[str]) -> str:
    out, err = proc.communicate(timeout=120)
    seen += out.split("\n")
    assert proc.returncode == 0, err
    return next(line.split(" ", 1)[1] for line in seen if line.startswith("folder "))


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in load_model(folder, "cpu", torch.float32).model.state_dict().items()}


# -- item 4: one conversion at a time, nothing left behind ---------------------------------------

def test_two_processes_convert_once_and_share_the_folder(cache_home, tiny):
    first, second = start(tiny.path, 0.5), None  # slow enough for the second to start under load
    seen_a, seen_b = [], []
    try:
        wait_for(first, "converting", seen_a)
        # The live conversion's temporary folder is not swept from under it.
        assert cache_folder.sweep(models_dir(cache_home)) == []
        second = start(tiny.path, 0.0)
        wait_for(second, "waiting", seen_b)  # it waits, reporting the other's progress
        a, b = finish(first, seen_a), finish(second, seen_b)
    finally:
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.kill()
    assert a == b
    assert "converting" not in seen_b  # one conversion
    assert [p.name for p in models_dir(cache_home).iterdir()] == [Path(a).name]


def test_conversion_killed_half_way_is_swept_at_the_next_start(cache_home, tiny):
    proc = start(tiny.path, 0.2)
    try:
        wait_for(proc, "converting", [])
        proc.kill()
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    left = list(models_dir(cache_home).iterdir())
    assert len(left) == 1 and left[0].name.startswith(".")  # what kill -9 leaves: a temporary folder
    folder = model_cache.gguf_folder(tiny.path)
    assert [p.name for p in models_dir(cache_home).iterdir()] == [folder.name]


def test_sigterm_during_a_conversion_removes_its_folder(cache_home, tiny):
    proc = start(tiny.path, 0.2)
    seen: list[str] = []
    try:
        wait_for(proc, "converting", seen)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM and "interrupted" in out, err
    assert list(models_dir(cache_home).iterdir()) == []
    t0 = time.monotonic()
    model_cache.gguf_folder(tiny.path)  # the lock went with the process: no wait
    assert time.monotonic() - t0 < cache_folder.LOCK_POLL_S * 4


# -- item 5: a manifest, checked at load; damaged folders rebuilt ------------------------------

def test_manifest_lists_every_file_and_everything_is_fsynced_before_the_rename(cache_home, tiny, monkeypatch):
    synced, order = [], []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    def rename(a, b):
        order.append(("rename", str(a), str(b), list(synced)))
        return real_rename(a, b)

    monkeypatch.setattr(cache_folder.os, "fsync", fsync)
    monkeypatch.setattr(cache_folder.os, "rename", rename)
    folder = model_cache.gguf_folder(tiny.path)
    manifest = json.loads((folder / cache_folder.MANIFEST_NAME).read_text())
    files = sorted(p.name for p in folder.iterdir() if p.name != cache_folder.MANIFEST_NAME)
    assert sorted(manifest["files"]) == files and "config.json" in files
    for name, entry in manifest["files"].items():
        data = (folder / name).read_bytes()
        assert entry["size"] == len(data) and entry["sha256"] == hashlib.sha256(data).hexdigest()
    (_, tmp, target, before), = order
    assert target == str(folder)
    for name in files + [cache_folder.MANIFEST_NAME]:
        assert os.path.join(tmp, name) in before, name  # each file on disk before the rename
    assert tmp in before  # and the folder's entries


def zero_tensor_bytes(shard: Path) -> None:
    """Keep the safetensors header, zero every tensor byte (what a crash before writeback leaves)."""
    data = bytearray(shard.read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")
    data[header:] = bytes(len(data) - header)
    shard.write_bytes(bytes(data))


def test_zeroed_tensor_bytes_are_caught_at_load_and_rebuilt(cache_home, tiny):
    folder = model_cache.gguf_folder(tiny.path)
    want = weights(folder)
    shard = next(folder.glob("*.safetensors"))
    zero_tensor_bytes(shard)
    assert model_cache.gguf_folder(tiny.path) == folder  # detected by the quick check, converted again
    got = weights(folder)
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert [p.name for p in models_dir(cache_home).iterdir()] == [folder.name]


@pytest.mark.parametrize("damage", ["config.json", "a shard", "the manifest", "a whole folder of junk", "a file",
                                    "a link"])
def test_a_half_present_folder_is_replaced_not_enotempty(cache_home, tiny, damage):
    folder = model_cache.gguf_folder(tiny.path)
    want = weights(folder)
    if damage == "config.json":
        (folder / "config.json").unlink()
    elif damage == "a shard":
        next(folder.glob("*.safetensors")).unlink()
    elif damage == "the manifest":
        (folder / cache_folder.MANIFEST_NAME).write_text("{")
    elif damage == "a whole folder of junk":
        for p in folder.iterdir():
            p.unlink()
        (folder / "junk").write_text("x")
    else:  # the folder's name taken by a file, or by a link to a folder elsewhere
        import shutil

        shutil.rmtree(folder)
        if damage == "a file":
            folder.write_text("x")
        else:
            elsewhere = folder.parent.parent / "elsewhere"
            elsewhere.mkdir()
            folder.symlink_to(elsewhere)
    for _ in range(2):  # and the next start finds it sound
        assert model_cache.gguf_folder(tiny.path) == folder
    got = weights(folder)
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert folder.is_dir() and not folder.is_symlink()
    assert [p.name for p in models_dir(cache_home).iterdir()] == [folder.name]


def test_one_flipped_byte_is_caught_by_the_full_check_after_a_reboot(cache_home, tiny, monkeypatch):
    folder = model_cache.gguf_folder(tiny.path)
    shard = next(folder.glob("*.safetensors"))
    data = bytearray(shard.read_bytes())
    at = cache_folder.SAMPLE_BYTES + 17  # inside no sampled block
    assert all(not (o <= at < o + cache_folder.SAMPLE_BYTES) for o in cache_folder._offsets(len(data)))
    data[at] ^= 0x40
    shard.write_bytes(bytes(data))
    cache_folder.check(folder)  # the quick check cannot see one byte
    monkeypatch.setattr(cache_folder, "_boot_id", lambda: "another boot")
    with pytest.raises(cache_folder.Damaged, match="sha256 differs"):
        cache_folder.check(folder)
    assert model_cache.gguf_folder(tiny.path) == folder  # rebuilt
    cache_folder.check(folder, full=True)


def test_a_legacy_folder_without_a_manifest_is_rebuilt(cache_home, tiny):
    folder = model_cache.gguf_folder(tiny.path)
    (folder / cache_folder.MANIFEST_NAME).unlink()
    assert model_cache.gguf_folder(tiny.path) == folder
    assert (folder / cache_folder.MANIFEST_NAME).is_file()


# -- item 8: the sha256 checked again for every conversion -------------------------------------

def test_a_file_changed_under_its_mtime_is_not_converted(cache_home, tiny):
    digest = model_cache.sha256_of([tiny.path])  # remembered by (path, size, mtime)
    st = tiny.path.stat()
    data = bytearray(tiny.path.read_bytes())
    data[-5] ^= 1
    tiny.path.write_bytes(bytes(data))
    os.utime(tiny.path, ns=(st.st_atime_ns, st.st_mtime_ns))  # touch -r: the stat key matches
    assert model_cache.sha256_of([tiny.path]) == digest  # a load may trust it ...
    with pytest.raises(CoreError) as e:  # ... a conversion does not
        model_cache.gguf_folder(tiny.path)
    msg = str(e.value)
    assert "\n" not in msg and str(tiny.path) in msg and "changed since it was checked" in msg
    assert list(models_dir(cache_home).iterdir()) == []
    assert model_cache.sha256_of([tiny.path]) != digest  # the stale hash was forgotten


def test_the_output_is_bounded_by_the_free_space_before_a_byte_is_written(cache_home, tiny, monkeypatch):
    import shutil

    real = shutil.disk_usage
    monkeypatch.setattr(model_cache.shutil, "disk_usage", lambda p: real(p)._replace(free=100 << 20))
    with pytest.raises(CoreError) as e:
        model_cache.gguf_folder(tiny.path)
    msg = str(e.value)
    assert "\n" not in msg and "needs about" in msg and "is free" in msg
    assert list(models_dir(cache_home).iterdir()) == []
