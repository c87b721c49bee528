"""diffill language server: LSP handlers, settings, the core client and the CLI.

Imports no torch: the CLI imports ``diffusion_core`` lazily inside the subcommands
that need it, and the server talks to the core through ``core_client``.
"""
