"""Byte-level BPE for code: training a tokenizer.json with the special tokens the core needs.

Owns the tokenizer recipe (pre-tokenization, special tokens). Indentation-friendly: the
split keeps runs of whitespace together so BPE learns indentation runs as single tokens.
"""
from __future__ import annotations

from typing import Iterable

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from diffusion_core.network.config import DEFAULT_SPECIAL_TOKENS

# cl100k-style split: letters with one leading non-letter, numbers in groups of three (with
# their leading space),
# punctuation runs, newline runs with the indentation that follows, other whitespace runs.
SPLIT_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+| ?\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)


def special_token_list() -> list[str]:
    return list(dict.fromkeys(DEFAULT_SPECIAL_TOKENS.values()))


def new_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE(byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    return tok


def train_bpe(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> Tokenizer:
    """Train on an iterator of texts; special tokens get the first ids, then the 256 bytes."""
    tok = new_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[AddedToken(t, special=True, normalized=False) for t in special_token_list()],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok
