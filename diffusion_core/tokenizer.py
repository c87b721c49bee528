"""Text <-> token ids through a `tokenizer.json` (the HF tokenizers library), and the special-token ids.

Owns tokenization only: never executes code from a model folder, never downloads.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer as _HFTokenizer

from .errors import CoreError


@dataclass(frozen=True)
class SpecialIds:
    """Ids of the tokens the layout and sampler need; None where a model has no such token."""

    mask: int
    eos: int
    bos: int | None = None
    pad: int | None = None
    suf: int | None = None
    pre: int | None = None
    mid: int | None = None
    hole: int | None = None
    expand: int | None = None  # DreamOn: a mask that may grow into two

    def end_ids(self) -> tuple[int, ...]:
        """Tokens that end a hole: everything from the first of them on is trimmed."""
        return tuple(i for i in {self.eos, self.pad} if i is not None)


class Tokenizer:
    def __init__(self, path: str | Path, special_names: dict[str, str], extra_ids: dict[str, int] | None = None):
        path = Path(path)
        if not path.is_file():
            raise CoreError(f"{path}: tokenizer.json not found")
        try:
            self._tok = _HFTokenizer.from_file(str(path))
        except Exception as e:  # the tokenizers library raises a bare Exception on bad JSON
            raise CoreError(f"{path}: not a valid tokenizer.json ({str(e).splitlines()[0][:120]})") from None
        ids: dict[str, int | None] = {}
        for role, name in special_names.items():
            tid = self._tok.token_to_id(name) if name else None
            if tid is None and role in ("mask", "eos"):
                raise CoreError(f"{path}: special token {name!r} ({role}) is not in the vocabulary")
            ids[role] = tid
        ids.update(extra_ids or {})
        self.special = SpecialIds(**{k: v for k, v in ids.items() if k in SpecialIds.__dataclass_fields__})
        self.vocab_size = self._tok.get_vocab_size()
        # Text is text: a document that contains the string "<|fim_prefix|>" (or any special
        # token's text) must not become that token, or a file could rewrite the frame its own
        # fill is decoded in. The layouts insert special ids themselves, never through encode.
        self._tok.encode_special_tokens = True

    def encode(self, text: str) -> list[int]:
        if not text:
            return []
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=False)

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)
