"""A converted model folder's integrity: one writer at a time, a manifest, durable renames, leftovers swept.

Owns, for the folders `model_cache` keeps under models/:
  * the conversion lock: `<cache>/locks/<folder name>.lock`, an flock held for the whole
    conversion, so two editors opening at once convert once (issue 22: two conversions at
    once took 133 s each instead of 74 s, and 4.8 GB). The holder writes its progress into
    the lock file; a process waiting for it reports that progress as its own.
  * the sweep of temporary folders (`models/.<folder name>.<suffix>`): one whose folder's
    lock nobody holds belongs to a dead conversion (kill -9, a crash) and is removed.
  * the manifest (`manifest.json`): every file the writer left, with its size, sha256 and the
    sha256 of a few sampled blocks; written, with every file fsynced, before the rename.
  * the check at load: sizes and sampled blocks every time (a few ms), every byte's sha256
    the first time a folder is used after the machine booted (a crash is a reboot) and
    after it was written; a folder that fails is moved aside and rebuilt.

Must not know GGUF, tensors or which files a writer makes (the manifest lists whatever
is in the folder). Standard library only.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import stat
import time
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
LOCKS_DIR_NAME = "locks"
CHECKED_NAME = "checked.json"  # folder name -> the boot id of its last full check
# sha256 with the CPU's SHA extensions is the fastest strong hash the standard library has
# here (the 2-core dev CPU, 545 MB shard in memory: sha256 1.64 GB/s, sha1 1.45, blake2b
# 1.07, md5 0.82; 1.29 GB/s from the page cache), so the manifest keeps plain sha256.
HASH_CHUNK = 16 * 1024 * 1024
SAMPLES = 8  # blocks hashed per file by the quick check, spread over the file
SAMPLE_BYTES = 4096
# A temporary folder whose model has no lock file was made by an earlier diffill (which
# took no lock): it is removed once it is this old, so a conversion still running under the
# old code is not cut short.
UNLOCKED_TEMP_AGE_S = 3600.0
LOCK_POLL_S = 0.5
LOCK_REPORT_S = 0.5  # the holder rewrites its progress in the lock file at most this often

Progress = Callable[[int, int, str], None]


class Damaged(Exception):
    """A folder's files do not match its manifest; the message says which, in one line."""


# -- where things are ----------------------------------------------------------------------------

def lock_path(folder: Path) -> Path:
    return folder.parent.parent / LOCKS_DIR_NAME / f"{folder.name}.lock"


def temp_prefix(folder: Path) -> str:
    """The name prefix of `folder`'s temporary folders (its lock covers them)."""
    return f".{folder.name}."


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:  # not Linux: every process start counts as a boot (a full check per start)
        return f"pid-{os.getpid()}"


# -- the lock --------------------------------------------------------------------------------

def _open_lock(path: Path) -> int:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0), 0o600)


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise


class ConversionLock:
    """Held while one process converts a model (`acquire`); `report` is the holder's progress
    callback, also written into the lock file for the processes waiting on it."""

    def __init__(self, fd: int, progress: Progress | None):
        self.fd: int | None = fd
        self.progress = progress
        self._last = 0.0

    def report(self, done: int, total: int, what: str) -> None:
        if self.progress:
            self.progress(done, total, what)
        now = time.monotonic()
        if self.fd is not None and (now - self._last >= LOCK_REPORT_S or done >= total):
            self._last = now
            record = json.dumps({"pid": os.getpid(), "done": done, "total": total, "what": what}).encode()
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
                os.pwrite(self.fd, record, 0)

    def release(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)  # drops the flock

    def __enter__(self) -> "ConversionLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _holder(fd: int) -> dict:
    try:
        d = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return d if isinstance(d, dict) else {}
    except (OSError, ValueError):
        return {}  # being rewritten: the next poll reads it


def acquire(folder: Path, progress: Progress | None = None) -> ConversionLock:
    """Take `folder`'s conversion lock; while another process holds it, wait and report its
    progress ("waiting for pid N (converting ...)"). The kernel drops an flock with its
    holder's last descriptor, so a killed holder never blocks the next start. OSError with
    the lock's path when it cannot be opened."""
    path = lock_path(folder)
    try:
        fd = _open_lock(path)
    except OSError as e:
        raise OSError(e.errno, f"{path}: cannot open the conversion lock ({e.strerror})") from None
    try:
        waited = False
        while not _try_flock(fd):
            if not waited:
                log.info("another process is converting %s; waiting for it", folder.name)
                waited = True
            h = _holder(fd)
            if progress:
                total = h.get("total") if isinstance(h.get("total"), int) else 0
                done = h.get("done") if isinstance(h.get("done"), int) else 0
                progress(done, total, f"waiting for pid {h.get('pid', '?')} ({h.get('what', 'starting')})")
            time.sleep(LOCK_POLL_S)
    except BaseException:  # a signal while waiting: no descriptor left behind
        os.close(fd)
        raise
    return ConversionLock(fd, progress)


# -- temporary folders ----------------------------------------------------------------------------

def sweep(root: Path) -> list[Path]:
    """Remove the temporary folders under root (models/) that no live conversion holds.

    `.<name>.<suffix>` belongs to the conversion of <name>: if nobody holds <name>'s lock,
    its writer is dead (kill -9, a crash, a power cut) and the folder goes. Never follows a
    link; a folder that is not ours is left alone."""
    removed: list[Path] = []
    try:
        names = os.listdir(root)
    except OSError:
        return removed
    for entry in names:
        if not entry.startswith(".") or entry.count(".") < 2:
            continue
        path = root / entry
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            continue
        model = root / entry[1:].rsplit(".", 1)[0]
        lock = lock_path(model)
        if not lock.exists():
            if time.time() - st.st_mtime >= UNLOCKED_TEMP_AGE_S:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
            continue
        try:
            fd = _open_lock(lock)
        except OSError:
            continue
        try:
            if _try_flock(fd):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        finally:
            os.close(fd)
    for path in removed:
        log.info("removed %s (left by a conversion that did not finish)", path)
    return removed


def discard(folder: Path) -> None:
    """Take a damaged folder out of the way: renamed aside first (a process opening it sees it
    whole or not at all), then removed. The caller holds its conversion lock."""
    aside = folder.parent / f"{temp_prefix(folder)}damaged-{os.getpid()}-{time.monotonic_ns()}"
    try:
        os.rename(folder, aside)
    except FileNotFoundError:
        return
    if aside.is_symlink() or not aside.is_dir():  # a link or a file where the folder should be
        aside.unlink(missing_ok=True)
        return
    shutil.rmtree(aside, ignore_errors=True)


# -- the manifest ----------------------------------------------------------------------------

def _files(folder: Path) -> list[str]:
    """Every regular file under folder, relative, sorted (the manifest itself excluded)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in filenames:
            rel = os.path.relpath(os.path.join(dirpath, name), folder)
            if rel != MANIFEST_NAME:
                out.append(rel)
    return sorted(out)


def _offsets(size: int) -> list[int]:
    if size <= SAMPLES * SAMPLE_BYTES:
        return [0]
    last = size - SAMPLE_BYTES
    return sorted({last * i // (SAMPLES - 1) for i in range(SAMPLES)})


def _sampled(f, size: int) -> str:
    h = hashlib.sha256()
    for at in _offsets(size):
        f.seek(at)
        h.update(f.read(SAMPLE_BYTES if size > SAMPLES * SAMPLE_BYTES else size))
    return h.hexdigest()


def _full(f, progress: Callable[[int], None] | None = None) -> str:
    h = hashlib.sha256()
    f.seek(0)
    while chunk := f.read(HASH_CHUNK):
        h.update(chunk)
        if progress:
            progress(len(chunk))
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def seal(folder: Path, progress: Progress | None = None) -> dict:
    """Write folder's manifest (every file: size, sha256, sampled sha256) and make it all
    durable: each file fsynced, then the manifest, then the folder. Call before the rename
    that publishes the folder, so a crash can never leave a published folder whose pages
    never reached the disk (issue 22: zeroed tensor bytes, a silently wrong fill)."""
    files = _files(folder)
    total = sum((folder / rel).stat().st_size for rel in files)
    done = 0
    entries = {}
    for rel in files:
        with open(folder / rel, "rb") as f:
            os.fsync(f.fileno())
            size = os.fstat(f.fileno()).st_size

            def step(n: int) -> None:
                nonlocal done
                done += n
                if progress:
                    progress(done, total, "sealing the converted model")

            entries[rel] = {"size": size, "sha256": _full(f, step), "sampled": _sampled(f, size)}
    manifest = {"version": MANIFEST_VERSION, "files": entries}
    path = folder / MANIFEST_NAME
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
    for dirpath, _, _ in os.walk(folder):
        _fsync_dir(Path(dirpath))
    return manifest


def publish(tmp: Path, folder: Path) -> None:
    """Rename the sealed tmp into place and make the rename durable; the folder counts as fully
    checked in this boot (its bytes were just hashed)."""
    os.rename(tmp, folder)
    with contextlib.suppress(OSError):
        _fsync_dir(folder.parent)
    _mark_checked(folder)


def _read_manifest(folder: Path) -> dict:
    path = folder / MANIFEST_NAME
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise Damaged(f"{folder}: no {MANIFEST_NAME} (written by an earlier diffill, or damaged)") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise Damaged(f"{path}: unreadable ({e.__class__.__name__})") from None
    files = m.get("files") if isinstance(m, dict) else None
    if m.get("version") != MANIFEST_VERSION or not isinstance(files, dict) or not files or not all(
            isinstance(v, dict) and isinstance(v.get("size"), int) and isinstance(v.get("sha256"), str)
            and isinstance(v.get("sampled"), str) for v in files.values()):
        raise Damaged(f"{path}: not a version-{MANIFEST_VERSION} manifest")
    return files


def _checked_path(folder: Path) -> Path:
    return folder.parent.parent / CHECKED_NAME


def _read_checked(folder: Path) -> dict:
    try:
        d = json.loads(_checked_path(folder).read_text(encoding="utf-8"))
        return d if isinstance(d, dict) else {}
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return {}


def _mark_checked(folder: Path) -> None:
    checked = _read_checked(folder)
    checked[folder.name] = _boot_id()
    path = _checked_path(folder)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        tmp.write_text(json.dumps(checked, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:  # a read-only cache: the next start checks in full again
        log.warning("%s: cannot record the check (%s)", path, e.strerror)


def check(folder: Path, progress: Progress | None = None, full: bool | None = None) -> None:
    """Raise Damaged (one line) unless folder's files match its manifest.

    Every load: each file's size and the sha256 of SAMPLES blocks spread over it (a few
    ms). full (default: the folder was not fully checked since the machine booted): every
    byte's sha256 too; recorded, so it runs once per boot."""
    files = _read_manifest(folder)
    if full is None:
        full = _read_checked(folder).get(folder.name) != _boot_id()
    total = sum(v["size"] for v in files.values())
    done = 0
    for rel, want in sorted(files.items()):
        path = folder / rel
        if os.path.isabs(rel) or ".." in Path(rel).parts:
            raise Damaged(f"{folder / MANIFEST_NAME}: names a file outside the folder ({rel!r})")
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size != want["size"]:
                    raise Damaged(f"{path}: {size:,} bytes, the manifest says {want['size']:,}")
                if _sampled(f, size) != want["sampled"]:
                    raise Damaged(f"{path}: its bytes differ from the manifest's (sampled check)")
                if full:
                    def step(n: int) -> None:
                        nonlocal done
                        done += n
                        if progress:
                            progress(done, total, "checking the converted model")

                    if _full(f, step) != want["sha256"]:
                        raise Damaged(f"{path}: its sha256 differs from the manifest's")
        except FileNotFoundError:
            raise Damaged(f"{path}: missing (listed in {MANIFEST_NAME})") from None
        except OSError as e:
            raise Damaged(f"{path}: unreadable ({e.strerror})") from None
    if full:
        _mark_checked(folder)
