"""The user cache: GGUF files converted once into model folders, and file hashes already checked.

Owns `$XDG_CACHE_HOME/diffill` (default ~/.cache/diffill):
  hashes.json       sha256 of files hashed before, keyed by each part's (path, size, mtime_ns)
  models/<sha256>/  one GGUF file converted: config.json, tokenizer.json, bf16 safetensors
                    (sharded, with an index) and provenance.json; a plain model folder that
                    `loader` memory-maps like any other. A model run in fp32 gets its own
                    fp32 copy beside it, models/<sha256>-float32-t/ (see `cache_dtype`).
  models/<sha256>-<scheme>-<fingerprint>/  the same with packed int4/int8 weights
                    (`quant`; the CPU default), keyed by the packing's layout fingerprint.
A folder appears in models/ only complete: it is written under a temporary name, sealed with a
manifest of its files (sizes, sha256) and fsynced, then renamed, one conversion at a time per
folder; it is checked against its manifest at every load and rebuilt when damaged
(`cache_folder`). locks/ and checked.json beside models/ belong to `cache_folder`.

Must not know where GGUF files come from (`base_model`) or what is inside one (`gguf_model`
reads it); never downloads.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from diffusion_core.errors import CoreError
from diffusion_core.network import quant
from . import cache_folder
from .gguf_model import Progress, open_gguf, our_name, read_gguf, read_tensors_info
from .weights import TRANSPOSED_SUFFIX, save_aligned

log = logging.getLogger(__name__)

CACHE_DIR_NAME = "diffill"
HASHES_NAME = "hashes.json"
MODELS_DIR_NAME = "models"
PROVENANCE_NAME = "provenance.json"
CACHE_DTYPE = torch.bfloat16  # half the bytes of fp32; the loader casts to the run dtype
# Folder name suffix of an fp32 copy, whose projection and head weights are stored transposed
# (weights.TRANSPOSED_SUFFIX: a 2x faster one-row decode step on a CPU). "-t": copies in the
# earlier layout ("-float32") are not reused, and are removed once the new copy is in place
# (2.4 GB each; a process still mapping one keeps its pages until it exits).
FLOAT32_SUFFIX = "-float32-t"
LEGACY_FLOAT32_SUFFIXES = ("-float32",)


def stored_name(name: str, shape: tuple[int, ...], dtype: torch.dtype) -> str:
    """The name a converted tensor is stored under: fp32 matmul weights transposed."""
    transposed = dtype == torch.float32 and len(shape) == 2 and (name.endswith("_proj.weight") or name == "lm_head.weight")
    return name + TRANSPOSED_SUFFIX if transposed else name
# Tensors are dequantized and written one shard at a time, so a conversion holds at most one
# shard (plus the tensor being dequantized) in memory, not the whole model.
CACHE_SHARD_BYTES = 256 * 1024 * 1024
HASH_CHUNK = 16 * 1024 * 1024
INDEX_NAME = "model.safetensors.index.json"  # the loader's sharded-folder index (loader.INDEX_NAME)


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / CACHE_DIR_NAME


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


# -- hashes ----------------------------------------------------------------------------------

def _stat_key(parts: list[Path]) -> str:
    """Identity of the parts as the file system sees them: (resolved path, size, mtime_ns) each.

    Hashing the 491 MB base costs seconds of CPU at every start; a changed file (pip
    reinstalling it, an edit, a truncation) changes its size or mtime, so a matching key
    means the bytes hashed before. This guards against accidents, not against someone who
    rewrites a file and then resets its mtime: they could edit the cache just as well.
    """
    rows = []
    for p in parts:
        st = p.stat()
        rows.append([str(p.resolve()), st.st_size, st.st_mtime_ns])
    return json.dumps(rows)


def _read_hashes() -> dict:
    path = cache_root() / HASHES_NAME
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        return d if isinstance(d, dict) else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}  # no cache yet, or a damaged one: hash again and rewrite it


def sha256_of(parts: list[Path], progress: Progress | None = None, use_cache: bool = True) -> str:
    """The sha256 of the parts joined in order (cached by `_stat_key`)."""
    parts = [Path(p) for p in parts]
    key = _stat_key(parts)
    if use_cache:
        known = _read_hashes().get(key)
        if isinstance(known, str):
            return known
    h = hashlib.sha256()
    total = sum(p.stat().st_size for p in parts)
    done = 0
    for p in parts:
        with open(p, "rb") as f:
            while chunk := f.read(HASH_CHUNK):
                h.update(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total, "checking sha256")
    digest = h.hexdigest()
    remember_hash(parts, digest, key)
    return digest


def remember_hash(parts: list[Path], digest: str, key: str | None = None) -> None:
    hashes = _read_hashes()
    hashes[key or _stat_key(parts)] = digest
    try:
        _write_atomic(cache_root() / HASHES_NAME, json.dumps(hashes, indent=1) + "\n")
    except OSError as e:  # a read-only cache only costs the next start a re-hash
        log.warning("%s: cannot record the hash (%s)", cache_root() / HASHES_NAME, e.strerror)


def forget_hash(parts: list[Path]) -> None:
    """Drop the cached hash of these parts (after they turned out not to match)."""
    hashes = _read_hashes()
    if hashes.pop(_stat_key(parts), None) is not None:
        try:
            _write_atomic(cache_root() / HASHES_NAME, json.dumps(hashes, indent=1) + "\n")
        except OSError:
            pass


# -- converted models ----------------------------------------------------------------------------

def cache_dtype(run_dtype: torch.dtype | None) -> torch.dtype:
    """The stored dtype for a model that will run in run_dtype: bf16, or fp32 for an fp32 run.

    Casting the base's 630M bf16 weights to fp32 at every start cost 3.9 s (warm fp32 load
    5.8 s from the bf16 copy, 1.9 s from an fp32 copy, first forward 0.8 s slower as the
    pages fault in; 2-core CPU), so an fp32 run (the CPU default) keeps its own 2.4 GB copy.
    """
    return torch.float32 if run_dtype == torch.float32 else CACHE_DTYPE


def model_dir(digest: str, dtype: torch.dtype = CACHE_DTYPE, scheme: str = "float32") -> Path:
    """models/<sha256>[-float32-t] for dense copies; models/<sha256>-<scheme>-<layout fingerprint>
    for packed ones (the int4 layout is blocked for the CPU that packed it: `quant.layout_fingerprint`)."""
    if scheme != "float32":
        return cache_root() / MODELS_DIR_NAME / f"{digest}-{scheme}-{quant.layout_fingerprint()}"
    return cache_root() / MODELS_DIR_NAME / (digest + (FLOAT32_SUFFIX if dtype == torch.float32 else ""))


def _shard_plan(shapes: dict[str, tuple[int, ...]], order: list[str], dtype: torch.dtype) -> list[list[str]]:
    item = torch.finfo(dtype).bits // 8
    shards: list[list[str]] = [[]]
    size = 0
    for name in order:
        n = item
        for d in shapes[name]:
            n *= d
        if shards[-1] and size + n > CACHE_SHARD_BYTES:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += n
    return shards


def _write_converted(parts: list[Path], folder: Path, provenance: dict, progress: Progress | None,
                     dtype: torch.dtype) -> None:
    """Convert the GGUF into `folder` (a fresh temporary directory)."""
    model = read_gguf(parts)
    cfg, tensors = model.config, model.tensors
    src = str(parts[0])
    order = [our_name(t.name, cfg.num_hidden_layers, src) for t in tensors.reader.tensors]
    plan = _shard_plan(tensors.shapes, order, dtype)
    file_of = {name: f"model-{i + 1:05d}-of-{len(plan):05d}.safetensors" for i, shard in enumerate(plan) for name in shard}
    pending: dict[str, torch.Tensor] = {}
    done = 0
    stream = tensors.dequantized(cfg, dtype)
    for i, shard in enumerate(plan):
        for _ in shard:
            name, w, nbytes = next(stream)
            assert file_of[name] == file_of[shard[0]], "the reader yields tensors in file order"
            key = stored_name(name, tuple(w.shape), dtype)
            pending[key] = w.t().contiguous() if key != name else w
            done += nbytes
            if progress:
                progress(done, tensors.total_bytes, f"converting {name}")
        save_file(pending, str(folder / file_of[shard[0]]), metadata={"format": "pt"})
        pending.clear()
    item = torch.finfo(dtype).bits // 8
    total = sum(item * int(torch.Size(s).numel()) for s in tensors.shapes.values())
    stored = {stored_name(n, tuple(tensors.shapes[n]), dtype): f for n, f in file_of.items()}
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(stored.items()))}
    (folder / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    (folder / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n", encoding="utf-8")
    model.tokenizer.save(str(folder / "tokenizer.json"))
    record = {**provenance, "gguf_metadata": model.metadata, "cache_dtype": str(dtype).removeprefix("torch.")}
    (folder / PROVENANCE_NAME).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def _write_packed(parts: list[Path], folder: Path, provenance: dict, progress: Progress | None,
                  scheme: str) -> None:
    """Convert the GGUF into `folder` with its matmul weights packed under `scheme` (quant).

    Shards are flushed past CACHE_SHARD_BYTES of packed entries, so a conversion holds one
    shard and the tensor being converted (the float32 head: 545 MB) in memory.
    """
    model = read_gguf(parts)
    cfg, tensors = model.config, model.tensors
    weight_map: dict[str, str] = {}
    pending: dict[str, torch.Tensor] = {}
    size = done = total = 0
    files = 0

    def flush() -> None:
        nonlocal files, size
        files += 1
        name = f"packed-{files:05d}.safetensors"
        save_aligned(pending, folder / name, metadata={"format": "pt"})
        weight_map.update({k: name for k in pending})
        pending.clear()
        size = 0

    fmt_of = lambda name, shape, kind: quant.tensor_format(scheme, name, shape, kind)  # noqa: E731
    for name, entries, nbytes in tensors.packed(cfg, fmt_of):
        n = sum(v.numel() * v.element_size() for v in entries.values())
        if pending and size + n > CACHE_SHARD_BYTES:
            flush()
        pending.update(entries)
        size += n
        total += n
        done += nbytes
        if progress:
            progress(done, tensors.total_bytes, f"packing {name}")
    if pending:
        flush()
    index = {"metadata": {"total_size": total, "weights": scheme}, "weight_map": dict(sorted(weight_map.items()))}
    (folder / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    (folder / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n", encoding="utf-8")
    model.tokenizer.save(str(folder / "tokenizer.json"))
    record = {**provenance, "gguf_metadata": model.metadata, "weights": scheme}
    (folder / PROVENANCE_NAME).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


class HashMismatch(CoreError):
    """The parts no longer hash to the digest a conversion was asked for (one line)."""


# Kept free on the cache's disk after a conversion's estimated output.
CONVERT_RESERVE_BYTES = 256 * 1024 * 1024


def _ready(target: Path, progress: Progress | None) -> bool:
    """target is a complete converted folder: the quick check of its manifest passes (and,
    the first time after the machine booted, the full one). Dead conversions' temporary
    folders are swept first; a damaged folder is logged and left to `_begin_conversion`."""
    cache_folder.sweep(target.parent)
    if not os.path.lexists(target):
        return False
    try:
        cache_folder.check(target, progress)
        return True
    except cache_folder.Damaged as e:
        log.warning("%s; converting it again", e)
        return False


def _output_bytes(parts: list[Path], item: int) -> int:
    """What a conversion writes at most: every tensor at `item` bytes per element. Bounded by
    the file: the reader refuses tensor ranges that overlap or leave it (gguf_header)."""
    info = read_tensors_info(open_gguf(parts))
    total = 0
    for shape in info.shapes.values():
        n = item
        for d in shape:
            n *= d
        total += n
    return total


def _begin_conversion(parts: list[Path], digest: str, target: Path, progress: Progress | None,
                      item: int) -> "cache_folder.ConversionLock | None":
    """Take target's conversion lock, waiting while another process converts it; None when
    that process left a good folder. Holding it: the parts hashed again (a stat match of
    hashes.json may skip the hash for a load, never for a conversion: issue 22 converted
    bytes changed under a kept mtime), the output checked against the free space before a
    byte is written, and a damaged target moved out of the way."""
    lock = cache_folder.acquire(target, progress)
    try:
        if _ready(target, progress):
            lock.release()
            return None
        got = sha256_of(parts, lock.report, use_cache=False)
        if got != digest:
            forget_hash(parts)
            raise HashMismatch(f"{parts[0]}{f' (+{len(parts) - 1} parts)' if len(parts) > 1 else ''}: sha256 is "
                               f"{got[:16]}..., expected {digest[:16]}...: the file changed since it was checked")
        need = _output_bytes(parts, item) + CONVERT_RESERVE_BYTES
        free = shutil.disk_usage(target.parent).free
        if need > free:
            raise CoreError(f"{target.parent}: converting {parts[0].name} needs about {need / 1e9:.2f} GB "
                            f"(with {CONVERT_RESERVE_BYTES >> 20} MiB kept free), {free / 1e9:.2f} GB is free")
        if os.path.lexists(target):
            cache_folder.discard(target)
        return lock
    except BaseException:
        lock.release()
        raise


def converted(parts: list[Path], digest: str, provenance: dict | None = None,
              progress: Progress | None = None, dtype: torch.dtype = CACHE_DTYPE, scheme: str = "float32") -> Path:
    """The cached model folder of the GGUF whose joined parts hash to `digest`; converted on first use.

    dtype: the stored dtype (`cache_dtype` of the run dtype) of a dense copy; scheme: a packed
    scheme (quant.PACKED_SCHEMES) stores packed weights instead, or "float32" for dense.
    The caller has checked `digest` (the cache is keyed by it); a conversion hashes the
    parts again. Written under a temporary name, sealed and renamed, so an interrupted
    conversion never leaves a folder that looks done; one process converts at a time, the
    others wait for it (reporting its progress) and use its folder.
    """
    target = model_dir(digest, dtype, scheme)
    if _ready(target, progress):
        return target
    root = target.parent
    lock = None
    try:
        root.mkdir(parents=True, exist_ok=True)
        # Packed schemes store nothing wider than float32 per element.
        lock = _begin_conversion(parts, digest, target, progress, torch.finfo(dtype).bits // 8 if scheme == "float32" else 4)
        if lock is None:  # another process converted it while we waited
            return target
        progress = lock.report  # the processes waiting on the lock see this conversion's progress
        tmp = Path(tempfile.mkdtemp(prefix=cache_folder.temp_prefix(target), dir=root))
    except OSError as e:
        if lock is not None:
            lock.release()
        raise CoreError(f"{root}: cannot create the model cache ({e.strerror}); set XDG_CACHE_HOME to a writable "
                        "directory") from None
    try:
        record = {"gguf_sha256": digest, "gguf_files": [str(p) for p in parts], **(provenance or {})}
        log.info("converting %s into %s (once)", parts[0], target)
        try:
            if scheme == "float32":
                _write_converted([Path(p) for p in parts], tmp, record, progress, dtype)
            else:
                _write_packed([Path(p) for p in parts], tmp, record, progress, scheme)
            cache_folder.seal(tmp, progress)
        except OSError as e:
            raise CoreError(f"{tmp}: cannot write the converted model ({e.strerror})") from None
        try:
            cache_folder.publish(tmp, target)
        except OSError:
            if not (target / "config.json").is_file():
                raise CoreError(f"{target}: cannot move the converted model into place") from None
            # another process finished the same conversion first: keep its copy
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        lock.release()
    if dtype == torch.float32:
        for suffix in LEGACY_FLOAT32_SUFFIXES:
            old = root / (digest + suffix)
            if old.is_dir():
                log.info("removing %s (an earlier layout of the same model)", old)
                shutil.rmtree(old, ignore_errors=True)
    return target


def read_provenance(folder: Path) -> dict:
    try:
        d = json.loads((Path(folder) / PROVENANCE_NAME).read_text(encoding="utf-8"))
        return d if isinstance(d, dict) else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}


def gguf_folder(path: str | Path, progress: Progress | None = None, dtype: torch.dtype = CACHE_DTYPE,
                scheme: str = "float32") -> Path:
    """A user's .gguf file -> its cached model folder (hashed, converted on first use)."""
    path = Path(path)
    if not path.is_file():
        raise CoreError(f"{path}: GGUF file not found")
    digest = sha256_of([path], progress)
    return converted([path], digest, {"source": str(path)}, progress, dtype, scheme)
