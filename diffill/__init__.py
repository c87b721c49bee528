"""The ``diffill`` command: the dispatcher onto every package's subcommands, and ``diffill fill``.

The one product package that may import all three others (lsp_server, grammars,
diffusion_core): it wires the fill pipeline (lsp_server.pipeline) to an in-process
engine (diffusion_core.serving.local_core) for the command line. The language server itself
never imports it, so ``diffill lsp`` never loads torch.
"""
