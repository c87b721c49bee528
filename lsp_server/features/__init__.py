"""The language server's features, one module each (esbonio's ``server/features/``).

``completion`` (inline completion and the completion list: newest wins, debounce,
typed-ahead cache, windows), ``fill_holes`` (the ``diffill.fillHoles`` command: every
hole, the holes in a range, a selection regenerated; the code actions that offer it),
``status`` (``diffill/status``) and ``core_start`` (starting the core with
``$/progress``, its events, closing it). Each takes the ``DiffillServer`` that holds the
shared state (runtime.py); the handlers that call them are in server.py.

Must not know: torch, how results look on the wire (conversions.py).
"""
