"""Safetensors weights of a model folder: which files hold them, and reading them memory-mapped.

Owns the folder's weight-file layout (one file, or shards named by an index) and the
one reader, so the loader and the checkpoint converters share it without importing
each other. Must not know model architectures or configs.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open

from diffusion_core.errors import CoreError

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
# A tensor stored transposed: "<name>.T" holds name's weight as [in, out], contiguous, and
# loads as a transposed view, so F.linear reads it the way the CPU GEMV/GEMM run fastest
# (4864x896 fp32 on the 2-core dev CPU: 1.34 -> 0.68 ms at 1 row, 4.19 -> 3.25 ms at 16,
# 20.4 -> 16.2 ms at 200; the 151,936-row LM head 42.7 -> 25.3 ms at 1 row). The converted
# cache writes its fp32 copies this way (model_cache); views cost no copy of the memory map.
TRANSPOSED_SUFFIX = ".T"


def untranspose(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """tensors with every "<name>.T" entry replaced by name -> its transposed view."""
    return {(k[: -len(TRANSPOSED_SUFFIX)] if k.endswith(TRANSPOSED_SUFFIX) else k):
            (v.t() if k.endswith(TRANSPOSED_SUFFIX) and v.dim() == 2 else v) for k, v in tensors.items()}


# Every tensor of a file written by `save_aligned` starts on a multiple of this many bytes
# from the start of the file (so of a page-aligned memory map): torch's int8 weight kernel
# crashed (SIGSEGV) on a weight at an 8- or 24-byte offset, which safetensors' own writer gives.
ALIGN = 64
PAD_PREFIX = "__pad__."  # filler tensors between aligned ones; never loaded
_DTYPE_NAMES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16", torch.int8: "I8",
                torch.uint8: "U8", torch.int32: "I32", torch.int64: "I64"}


def save_aligned(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    """A safetensors file whose tensors all start ALIGN-aligned, flushed to disk before returning.

    The format allows it as is: the header may end in spaces, and a gap between two tensors
    is filled by a uint8 tensor named PAD_PREFIX + n (`read_tensors` skips those).
    """
    header: dict[str, object] = {"__metadata__": metadata} if metadata else {}
    layout, offset = [], 0
    for i, (name, t) in enumerate(tensors.items()):
        gap = -offset % ALIGN
        if gap:
            header[f"{PAD_PREFIX}{i}"] = {"dtype": "U8", "shape": [gap], "data_offsets": [offset, offset + gap]}
            layout.append(bytes(gap))
            offset += gap
        t = t.detach().contiguous().cpu()
        n = t.numel() * t.element_size()
        header[name] = {"dtype": _DTYPE_NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + n]}
        layout.append(t)
        offset += n
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-(8 + len(text)) % ALIGN)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for part in layout:
            f.write(part if isinstance(part, bytes) else part.reshape(-1).view(torch.uint8).numpy().tobytes())
        f.flush()
        os.fsync(f.fileno())


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a folder: the index's shards, or the single file."""
    index = folder / INDEX_NAME
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError, RecursionError):
            raise CoreError(f"{index}: not a valid safetensors index (needs a 'weight_map' object)") from None
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise CoreError(f"{index}: 'weight_map' is a {type(weight_map).__name__}, not an object of tensor name "
                            "-> shard file name")
        names = sorted(set(weight_map.values()))
        files = [folder / n for n in names]
        for f in files:
            if not f.is_file():
                raise CoreError(f"{f}: shard named in {INDEX_NAME} is missing")
        return files
    single = folder / SINGLE_NAME
    if single.is_file():
        return [single]
    raise CoreError(f"{folder}: no {SINGLE_NAME} or {INDEX_NAME}")


def read_tensors(files: list[Path]) -> dict[str, torch.Tensor]:
    """Memory-mapped tensors of all files; a corrupt file fails naming the file."""
    tensors: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as st:
                for key in st.keys():
                    if not key.startswith(PAD_PREFIX):
                        tensors[key] = st.get_tensor(key)
        except Exception as e:  # safetensors raises SafetensorError/OSError on truncated or bad headers
            raise CoreError(f"{f}: cannot read safetensors ({str(e).splitlines()[0][:120]})") from None
    return tensors
