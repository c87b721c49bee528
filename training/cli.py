"""`diffill train {corpus,tokenizer,run,ship}`: the training recipe's command line."""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

from diffusion_core.errors import CoreError


def _tokenizer(argv: list[str]) -> int:
    from .bpe import train_bpe

    ap = argparse.ArgumentParser(prog="diffill train tokenizer", description="Train the byte-level BPE on a corpus.",
                                 epilog="example:\n  diffill train tokenizer --corpus corpus --out runs/tok/tokenizer.json",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path, help="tokenizer.json to write")
    ap.add_argument("--vocab-size", type=int, default=8192)
    ap.add_argument("--sample-bytes", type=int, default=30_000_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    texts = [json.loads(l)["text"] for l in open(args.corpus / "train.jsonl", encoding="utf-8")]
    random.Random(args.seed).shuffle(texts)
    sample, n = [], 0
    for t in texts:
        if n >= args.sample_bytes:
            break
        sample.append(t)
        n += len(t)
    tok = train_bpe(sample, args.vocab_size)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(args.out))
    print(f"tokenizer: {tok.get_vocab_size()} tokens from {n:,} characters -> {args.out}", file=sys.stderr)
    return 0


def _run(argv: list[str]) -> int:
    from .trainer import TrainConfig, train

    ap = argparse.ArgumentParser(prog="diffill train run", description="Train (or resume) a model from a config file.",
                                 epilog="example:\n  diffill train run --config runs/stage1.json",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, type=Path)
    args = ap.parse_args(argv)
    out = train(TrainConfig.load(args.config))
    print(f"model written to {out}", file=sys.stderr)
    return 0


# The recipe's steps in the order they run.
SUBCOMMANDS = {
    "corpus": "gather source files from this machine's installations into train/valid/holdout",
    "tokenizer": "train the byte-level BPE tokenizer on a corpus",
    "run": "train (or resume) a model from a config file",
    "ship": "write a trained run as a model folder (--dest) to point --model at",
    "draft": "train (or resume) the default model's mask-row drafting adapter",
}


def usage() -> str:
    lines = ["usage: diffill train {corpus,tokenizer,run,ship,draft} [args...]", "", "commands:"]
    lines += [f"  {name:<9}  {text}" for name, text in SUBCOMMANDS.items()]
    lines += ["", "example:", "  diffill train corpus --out corpus", "",
              "`diffill train NAME --help` lists a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"tokenizer": _tokenizer, "run": _run}
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] not in SUBCOMMANDS:
        print(f"diffill train: unknown command {argv[0]!r}\n{usage()}", file=sys.stderr)
        return 2
    try:
        if argv[0] == "corpus":
            from .corpus import main as corpus_main
            return corpus_main(argv[1:])
        if argv[0] == "draft":
            from .draft import main as draft_main
            return draft_main(argv[1:])
        if argv[0] == "ship":
            from .ship import main as ship_main
            return ship_main(argv[1:])
        return commands[argv[0]](argv[1:])
    except CoreError as e:
        print(f"diffill train: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
