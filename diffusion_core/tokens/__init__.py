"""Tokens: `tokenizer` (the vocabulary, special ids, token healing), `layout` (the token
layouts of an infill request, their attention masks and the truncation policy),
`infill_formats` (each checkpoint family's frame, end and banned tokens; the causal FIM
orders and the FIM token names) and `textcut` (request text cut to what the context window
can hold, before tokenizing).

Imports only `network.config` (a format is chosen from a ModelConfig) and the top-level
`errors`. Must not know files, weights, caches or the engine (nothing from loading,
generation or serving): loading needs a family's token names to convert its checkpoint and
generation builds its requests from these layouts, so this room sits below both.
"""
