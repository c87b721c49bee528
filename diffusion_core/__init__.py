"""diffill's denoising core: tokenizer, model, sampler, engine, core process and training.

Knows tokens and tensors; knows nothing of LSP. `protocol` is the only module the
editor-side process imports from here.
"""
