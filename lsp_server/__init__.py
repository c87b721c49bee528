"""diffill language server: LSP handlers, the server's features, settings, documents,
the fill pipeline and the core client.

Imports no torch: the core runs in its own process (``diffill core``), reached through
``core_client``; of ``diffusion_core`` only ``protocol`` is imported here. ``diffill lsp``
is ``server.main``.
"""
