"""grammars: what to fill and how to cut a fill, from tree-sitter syntax trees.

Owns the language registry, the query files, open documents with incremental trees,
position conversion, the span planner, hole finding, post-processing and training
spans. Must not know torch, tokens or LSP types: everything here is a pure function of
(text, tree, position), so the LSP server and training can both call it.
"""
