"""The network: `config` (ModelConfig, what a model folder's config.json says), `model`
(the plain-torch transformer and its key/value cache) and `quant` (the packed int4/int8
weight-only layers that stand in for its linears after loading).

Must not know tokens, files, caches or requests: it imports only `diffusion_core.errors`
and `diffusion_core.protocol` (the weights schemes). Every other room builds on it:
tokens reads a config's layout, loading fills the network with weights, generation runs it.
"""
