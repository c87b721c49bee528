"""The ``diffill`` command: the table of subcommands and their lazy dispatch.

Owns: which module answers ``diffill NAME`` and ``diffill bench NAME``, the usage
lists, ``--version``. Modules are imported only when their command is asked for, so
``diffill lsp`` loads the language server and nothing of torch.

Must not know: what any subcommand does beyond its one-line help.
"""

from __future__ import annotations

import importlib
import signal
import sys
from importlib import metadata
from typing import Callable, NamedTuple


class Command(NamedTuple):
    module: str
    func: str
    help: str


SUBCOMMANDS: dict[str, Command] = {
    "lsp": Command("lsp_server.server", "main", "run the language server for an editor (stdio, or --tcp HOST:PORT)"),
    "fill": Command("diffill.fill", "main", "fill the holes of a file (or stdin) and print the whole result"),
    "core": Command("diffusion_core.serving.service", "main", "run a denoising core that several editors share"),
    "train": Command("training.cli", "main", "build a corpus, train a tokenizer or a model, ship it"),
    "bench": Command("diffill.cli", "bench_main", "benchmark fill quality and latency (diffill bench NAME)"),
}

# `diffill bench NAME`: every benchmark prints a table, then one JSON line last.
BENCHES: dict[str, Command] = {
    "quality": Command("evaluation.bench_quality", "main", "held-out fill quality and latency through the shipped fill path"),
    "latency": Command("evaluation.bench_latency", "main", "core latency over context sizes and hole budgets"),
    "service": Command("evaluation.bench_service", "main", "completions/s of one shared core at several concurrent editors"),
    "typing": Command("evaluation.bench_typing", "main", "latency while typing a file into the real `diffill lsp`"),
    "neovim": Command("evaluation.bench_neovim", "main", "time to ghost text in real Neovim through the shipped Lua client"),
    "threads": Command("evaluation.bench_threads", "main", "encode and decode cost per torch thread count, quiet and busy"),
    "context-reuse": Command("evaluation.bench_context_reuse", "main",
                             "context tokens each key, cursor move and jump makes the core encode, per FIM layout"),
    "grammars": Command("evaluation.bench_grammars", "main", "reparse and plan time per keystroke"),
    "gpu": Command("evaluation.bench_gpu", "main", "GPU latency of a 7B-shaped model and the default one (Qwen2.5-Coder-0.5B)"),
    "decoding": Command("evaluation.decoding", "main", "decoding strategies of a pretrained coder, side by side"),
    "load": Command("evaluation.bench_load", "main", "GGUF load time: first conversion into the cache, then warm loads"),
    "hostile": Command("evaluation.bench_hostile", "main", "what hostile input costs the server and the core"),
    "core-start": Command("evaluation.bench_core_start", "main", "where a core's start goes, phase by phase, and its memory"),
    "examples": Command("evaluation.bench_examples", "main",
                        "diffill fill on the six sample files, compiled (or parsed) and their indentation checked"),
    "step": Command("evaluation.bench_step", "main", "where one decode step's time goes on the default model, per weights scheme"),
    "fim-order": Command("evaluation.bench_fim_order", "main", "FIM orders of the causal layout side by side: quality and typing reuse"),
    "llamacpp": Command("evaluation.bench_llamacpp", "main", "the llama.cpp peer alone on the decoding benchmark's holes"),
    "base-tokenizer": Command("evaluation.check_base_tokenizer", "main",
                              "the default model's tokenizer against transformers' own GGUF tokenizer"),
}

EXAMPLES = """examples:
  diffill fill app.py > filled.py      fill every <|fill|>, `pass`, `...`, `todo!()` hole
  diffill lsp                          what an editor starts
  diffill bench quality --limit 5      a quick quality run
  diffill <command> --help             what a command does, with an example"""


def version() -> str:
    try:
        return metadata.version("diffill")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def _listing(title: str, table: dict[str, Command], usage: str) -> str:
    width = max(map(len, table))
    lines = [f"usage: {usage}", "", f"{title}:"]
    lines += [f"  {name:<{width}}  {cmd.help}" for name, cmd in table.items()]
    return "\n".join(lines)


def usage() -> str:
    return _listing("commands", SUBCOMMANDS, "diffill [--version] <command> [args...]") + "\n\n" + EXAMPLES


def bench_usage() -> str:
    return (_listing("benchmarks", BENCHES, "diffill bench NAME [args...]")
            + "\n\n`diffill bench NAME --help` lists a benchmark's options.")


def _load(cmd: Command) -> Callable[[list[str]], int | None]:
    return getattr(importlib.import_module(cmd.module), cmd.func)


def _dispatch(prefix: str, table: dict[str, Command], argv: list[str], listing: Callable[[], str]) -> int:
    """Run ``table[argv[0]]`` with the rest; the list for no name (2) or --help (0)."""
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(listing())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in table:
        print(f"{prefix}: unknown command {name!r} (one of {', '.join(table)}; --help lists them)", file=sys.stderr)
        return 2
    try:
        entry = _load(table[name])
    except (ImportError, AttributeError) as exc:
        print(f"{prefix} {name}: not available ({table[name].module}: {exc})", file=sys.stderr)
        return 1
    return int(entry(rest) or 0)


def bench_main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return _dispatch("diffill bench", BENCHES, argv, bench_usage)


def _interrupted(signum: int, frame) -> None:
    raise KeyboardInterrupt(signum)


def main(argv: list[str] | None = None) -> int:
    # Before any work, even the imports of the command's modules (tree-sitter, pygls: up to
    # a second on a busy CPU): Ctrl-C or SIGTERM there is one line and 128 + the signal.
    # Each command installs its own handlers first thing (diffusion_core.serving.lifeline).
    previous = {sig: signal.signal(sig, _interrupted) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        if argv[:1] in (["--version"], ["-V"]):
            print(f"diffill {version()}")
            return 0
        return _dispatch("diffill", SUBCOMMANDS, argv, usage)
    except KeyboardInterrupt as exc:
        signum = exc.args[0] if exc.args and isinstance(exc.args[0], int) else signal.SIGINT
        print(f"diffill: interrupted ({signal.Signals(signum).name})", file=sys.stderr)
        return 128 + signum
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


if __name__ == "__main__":
    sys.exit(main())
