"""By-hand check: diffill's tokenizer of the base GGUF against transformers' own GGUF tokenizer.

    diffill bench base-tokenizer [FILES...]      (or python -m evaluation.check_base_tokenizer)

Owns: building the reference with `transformers.AutoTokenizer.from_pretrained(...,
gguf_file=...)` (transformers' GGUF reader and its Qwen2 converter, not diffill's code) from
the registry parts, then encoding text files (default: this repository's .py, .md, .rs, .go
files and examples/) and a few snippets with both. transformers reads one path, so it is
pointed at the parts here: its header reader at part 1 (the whole header, tokens and merges
included, lies in its first 6 MB) and gguf's reader at diffill's joined reader. Prints one
JSON line: texts, tokens, identical id sequences, exact round trips, the first differing files.
Needs transformers; offline; the base wheels installed (or `--gguf FILE`: any one GGUF file,
the smoke test's tiny one).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

SNIPPETS = ["def f(x):\n    return x**2  # 数\n", "\t\tif (a && b) { return 0; }\r\n",
            'fn main() { println!("{}", 42); }', "<|fim_prefix|>def a():<|fim_suffix|>\n<|fim_middle|>",
            "x = 123456789 + 0.5e-3", "   \n\n   \t"]


def reference_tokenizer(parts: list[Path]):
    import gguf
    import numpy as np
    import transformers
    import transformers.integrations.gguf.reader as hf_reader

    from diffusion_core.loading.gguf_model import open_gguf

    joined = open_gguf(parts)
    hf_reader._mapped = lambda path: np.memmap(parts[0], mode="r", dtype=np.uint8)
    gguf.GGUFReader = lambda *a, **k: joined
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "base.gguf").touch()  # transformers checks that the named file exists
        return transformers.AutoTokenizer.from_pretrained(d, gguf_file="base.gguf")


def main(argv: list[str] | None = None) -> int:
    from diffusion_core.loading import base_model
    from diffusion_core.loading.gguf_model import build_tokenizer, open_gguf

    ap = argparse.ArgumentParser(prog="diffill bench base-tokenizer", description=__doc__.splitlines()[0],
                                 epilog="example:\n  diffill bench base-tokenizer README.md diffill/cli.py",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="*", type=Path,
                    help="text files to encode (default: the repository's .py, .md, .rs, .go files and examples/)")
    ap.add_argument("--gguf", type=Path, help="a GGUF file to check instead of the default model's parts")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    parts = [args.gguf] if args.gguf else base_model.verify()
    ours = build_tokenizer(open_gguf(parts))
    ref = reference_tokenizer(parts)
    root = Path(__file__).resolve().parent.parent
    files = list(args.files) or sorted(
        p for pat in ("**/*.py", "**/*.md", "**/*.rs", "**/*.go", "examples/*") for p in root.glob(pat)
        if "node_modules" not in p.parts and p.is_file())
    texts = []
    for f in files:
        try:
            texts.append((str(f), f.read_text(encoding="utf-8")))
        except (UnicodeDecodeError, OSError):
            continue
    texts += [(repr(s), s) for s in SNIPPETS]
    same = exact = tokens = 0
    differ = []
    for name, text in texts:
        a = ours.encode(text, add_special_tokens=False).ids
        b = ref.encode(text, add_special_tokens=False)
        tokens += len(a)
        same += a == b
        exact += ours.decode(a, skip_special_tokens=False) == text
        if a != b:
            differ.append(name)
    print(json.dumps({"texts": len(texts), "tokens": tokens, "identical_ids": same, "roundtrip": exact,
                      "reference": type(ref).__name__, "differ": differ[:10]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
