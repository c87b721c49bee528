"""The ``diffill`` command: a dispatcher onto the subcommands of every package.

Owns: the subcommand table and lazy dispatch. ``lsp`` and ``fill`` are this
package's; ``core``, ``train`` and ``bench`` belong to diffusion_core and are imported
only when asked for, so ``diffill lsp`` never loads torch.

Must not know: what any subcommand does.
"""

from __future__ import annotations

import importlib
import sys
from typing import Callable

# subcommand -> (module, function, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "lsp": ("lsp_server.server", "main", "run the language server (stdio, or --tcp HOST:PORT)"),
    "fill": ("lsp_server.oneshot", "main", "fill the holes of a file and print the result"),
    "core": ("diffusion_core.service", "main", "run a shared denoising core"),
    "train": ("diffusion_core.train.cli", "main", "train a model"),
    "bench": ("diffusion_core.evaluate", "main", "benchmark a model"),
}


def _usage() -> str:
    lines = ["usage: diffill <command> [args...]", "", "commands:"]
    lines += [f"  {name:<6} {help_}" for name, (_, _, help_) in SUBCOMMANDS.items()]
    return "\n".join(lines)


def _load(name: str) -> Callable[[list[str]], int | None]:
    module_name, func, _ = SUBCOMMANDS[name]
    module = importlib.import_module(module_name)
    return getattr(module, func)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"diffill: unknown command {name!r}\n{_usage()}", file=sys.stderr)
        return 2
    try:
        entry = _load(name)
    except (ImportError, AttributeError) as exc:
        print(f"diffill {name}: not available ({SUBCOMMANDS[name][0]}: {exc})", file=sys.stderr)
        return 1
    code = entry(rest)
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
