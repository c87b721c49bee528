"""Safetensors weights of a model folder: which files hold them, and reading them memory-mapped.

Owns the folder's weight-file layout (one file, or shards named by an index) and the
one reader, so the loader and the checkpoint converters share it without importing
each other. Must not know model architectures or configs.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

from .errors import CoreError

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
                    tensors[key] = st.get_tensor(key)
        except Exception as e:  # safetensors raises SafetensorError/OSError on truncated or bad headers
            raise CoreError(f"{f}: cannot read safetensors ({str(e).splitlines()[0][:120]})") from None
    return tensors
