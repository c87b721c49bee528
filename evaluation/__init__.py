"""Evaluation and benchmarks of the whole product: held-out fill quality, decoding speed, typing latency.

The one package that may import all three others (lsp_server, grammars, diffusion_core): it
measures the path users get. Nothing in the product imports it.
"""
