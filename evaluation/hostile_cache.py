"""Cache and GGUF faults timed from outside (issue 22 items 4-6): the figures docs/security.md quotes.

Owns three experiments that `evaluation.bench_hostile --only NAME` runs:
  * first_run: two editors' private cores (`editors`) started at once on a fresh cache (default model,
    the client's production start deadline): seconds until each serves, how many conversions
    ran (one converts, the other waits and reports its progress), what models/ holds after;
    then the damage of issue 22 item 5 (the first shard's tensor bytes zeroed, the header kept):
    seconds of the next core start that detects and rebuilds it, and the quick and full
    checks of the folder alone;
  * hostile_gguf: each hostile header loaded (`loader.load_model`, as `diffill fill --model`
    does) in its own process: seconds to the one-line error and the peak RSS over the
    process's RSS before the load (target: <= 5 s and <= 2x the file size).

Must not know engine internals: cores are started through CoreClient, files are written by hand.
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lsp_server.core_client import EVENT_PROGRESS, CoreClient

ROOT = Path(__file__).resolve().parents[1]
SEGMENTS = ["def add(a, b):\n    return ", "\n"]


def _du_mb(path: Path) -> int:
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6)


async def _start_and_fill(client: CoreClient, t0: float) -> float:
    await client.start()
    await client.fill(SEGMENTS, [4], {})
    return round(time.monotonic() - t0, 1)


def _private_env(tmp: Path) -> dict:
    """os.environ pointed at a fresh cache and runtime folder (the cores inherit it); returns the old values."""
    run = tmp / "run"
    run.mkdir(mode=0o700)
    old = {k: os.environ.get(k) for k in ("XDG_CACHE_HOME", "XDG_RUNTIME_DIR")}
    os.environ.update(XDG_CACHE_HOME=str(tmp / "cache"), XDG_RUNTIME_DIR=str(run))
    return old


def _restore(old: dict) -> None:
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _zero_tensor_bytes(shard: Path) -> None:
    with open(shard, "r+b") as f:
        header = 8 + int.from_bytes(f.read(8), "little")
        size = os.fstat(f.fileno()).st_size
        f.seek(header)
        left = size - header
        while left:
            n = min(left, 1 << 24)
            f.write(bytes(n))
            left -= n


async def first_run(model: str | None, weights: str = "auto", editors: int = 2) -> dict:
    from diffusion_core.loading import cache_folder

    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        old = _private_env(Path(tmp))
        try:
            events: list[list[str]] = [[] for _ in range(editors)]
            clients = [CoreClient(model_dir=model, core_args=["--threads", "1"], standby=False, weights=weights,
                                  on_event=lambda k, m, i=i: events[i].append(m) if k == EVENT_PROGRESS else None)
                       for i in range(editors)]
            t0 = time.monotonic()
            try:
                served = await asyncio.gather(*(_start_and_fill(c, t0) for c in clients))
            finally:
                for c in clients:
                    await c.close()
            models = Path(tmp) / "cache" / "diffill" / "models"
            left = sorted(os.listdir(models))
            converting = [any(m.startswith(("converting", "packing")) for m in ev) for ev in events]
            waiting = [any(m.startswith("waiting for pid") for m in ev) for ev in events]
            out.update(first_run_served_s=served, first_run_conversions=sum(converting),
                       first_run_waited=sum(waiting), first_run_models_left=left,
                       first_run_models_mb=_du_mb(models))
            folder = models / left[0]
            t = time.perf_counter()
            cache_folder.check(folder, full=False)
            out["cache_quick_check_ms"] = round((time.perf_counter() - t) * 1000, 1)
            t = time.perf_counter()
            cache_folder.check(folder, full=True)
            out["cache_full_check_s"] = round(time.perf_counter() - t, 2)
            warm = CoreClient(model_dir=model, core_args=["--threads", "1"], standby=False, weights=weights)
            try:
                out["warm_start_s"] = await _start_and_fill(warm, time.monotonic())
            finally:
                await warm.close()
            shard = sorted(folder.glob("*.safetensors"))[0]
            _zero_tensor_bytes(shard)
            again = CoreClient(model_dir=model, core_args=["--threads", "1"], standby=False, weights=weights)
            try:
                out["damaged_start_s"] = await _start_and_fill(again, time.monotonic())
            finally:
                await again.close()
            cache_folder.check(folder, full=True)  # rebuilt whole
            out["damaged_models_left"] = sorted(os.listdir(models))
        finally:
            _restore(old)
    return out


# -- hostile GGUF files ---------------------------------------------------------------------

def _s(b: bytes) -> bytes:
    return struct.pack("<Q", len(b)) + b


def _kv_str(key: str, value: str) -> bytes:
    return _s(key.encode()) + struct.pack("<I", 8) + _s(value.encode())  # 8: STRING


def _kv_u32(key: str, value: int) -> bytes:
    return _s(key.encode()) + struct.pack("<II", 4, value)  # 4: UINT32


def _header(n_tensors: int, kvs: list[bytes]) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, n_tensors, len(kvs)) + b"".join(kvs)


def _pad(data: bytes, size: int) -> bytes:
    data += bytes(-len(data) % 32)
    return data + bytes(max(0, size - len(data)))


def hostile_files(folder: Path) -> dict[str, Path]:
    """The files of issue 22 item 6 and their kin, written by hand."""
    arch = [_kv_str("general.architecture", "qwen2")]
    files = {}
    p = folder / "huge_array.gguf"  # one 2^40-item uint8 array in 16 MB
    p.write_bytes(_pad(_header(0, arch + [_s(b"x.huge") + struct.pack("<IIQ", 9, 0, 1 << 40)]), 16 << 20))
    files["huge_array"] = p
    p = folder / "shared_offsets.gguf"  # 1,024 layers whose tensors all start at byte 0 of the data, 44 MB
    infos = b"".join(_s(f"blk.{i}.{n}.weight".encode()) + struct.pack("<IQQIQ", 2, 896, 4864, 8, 0)
                     for i in range(1024) for n in ("ffn_up", "ffn_gate", "ffn_down", "attn_q"))
    p.write_bytes(_pad(_header(4096, arch + [_kv_u32("qwen2.block_count", 1024)]) + infos, 44 << 20))
    files["shared_offsets"] = p
    p = folder / "big_arrays.gguf"  # 16 M uint8 items and 1 M strings, really there (then: keys missing)
    arrays = [_s(b"x.bytes") + struct.pack("<IIQ", 9, 0, 16 << 20) + bytes(16 << 20),
              _s(b"x.strings") + struct.pack("<IIQ", 9, 8, 1 << 20) + _s(b"ab") * (1 << 20)]
    p.write_bytes(_pad(_header(0, arch + arrays), 0))
    files["big_arrays"] = p
    p = folder / "outside.gguf"  # one tensor 1 TB past the end
    info = _s(b"token_embd.weight") + struct.pack("<IQQIQ", 2, 896, 151936, 8, 1 << 40)
    p.write_bytes(_pad(_header(1, arch) + info, 1 << 20))
    files["outside"] = p
    p = folder / "kv_count.gguf"  # 2^62 key/values declared
    p.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 1 << 62) + bytes(1 << 20))
    files["kv_count"] = p
    return files


LOAD = r"""
import json, resource, sys, time
from diffusion_core.loading.loader import load_model
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
try:
    load_model(sys.argv[1], "cpu")
    err = None
except Exception as e:
    err = f"{type(e).__name__}: {e}"
took = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"s": round(took, 3), "before_mb": round(before / 1024), "peak_mb": round(peak / 1024), "error": err}))
"""


def hostile_gguf(model: str | None = None) -> dict:
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        old = _private_env(Path(tmp))
        try:
            for name, path in hostile_files(Path(tmp)).items():
                r = subprocess.run([sys.executable, "-c", LOAD, str(path)], capture_output=True, text=True, timeout=600,
                                   env={**os.environ, "PYTHONPATH": str(ROOT)})
                got = json.loads(r.stdout.strip().splitlines()[-1])
                size_mb = round(path.stat().st_size / 1e6, 1)
                out[f"gguf_{name}"] = {"file_mb": size_mb, "s": got["s"], "rss_growth_mb": got["peak_mb"] - got["before_mb"],
                                       "one_line": got["error"] is not None and "\n" not in got["error"],
                                       "error": (got["error"] or "")[:160]}
        finally:
            _restore(old)
    return out
