"""Serving: how callers reach the engine.

  service     the core process (`diffill core`, `python -m diffusion_core.serving.service`):
              the socket, connections, the handshake, dispatch
  scheduler   batching, fairness and the queue bound, testable without tensors
  lifeline    a process's ties to its parent and to the signals that stop it
  local_core  the in-process CoreConnection of `diffill fill` and `diffill bench`
  progress    progress on stderr for the command line

Reaches the model only through the engine contract (`generation.engine`): nothing from
network, tokens or loading. No other room imports this one.
"""
