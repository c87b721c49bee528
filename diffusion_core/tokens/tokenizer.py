"""Text <-> token ids through a `tokenizer.json` (the HF tokenizers library), and the special-token ids.

Owns tokenization only: never executes code from a model folder, never downloads. Also
owns token healing's token-level half (`heal_point`, `heal_candidates`): a prompt that
ends inside a word or an operator (`resu`, `a =`) ends on a tokenization the model never
saw in training (` res` `u` where the finished word is one token ` result`), so the
engine backs the prompt up to the start of its last pre-token chunk and constrains the
first generated tokens to re-create the removed text (Microsoft guidance's "token
healing"; multi-token: every token either extends the rest of the removed bytes or is a
proper prefix of it).
"""
from __future__ import annotations

import bisect
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer as _HFTokenizer

from diffusion_core.errors import CoreError

log = logging.getLogger(__name__)

# Token healing backs up at most this many tokens (a pre-token chunk is a word with its
# leading space or an operator run; longer ones, `==========`, are left alone).
HEAL_MAX_TOKENS = 4
# The last pre-token chunk is found in this many characters at the end of the prompt.
HEAL_WINDOW_CHARS = 256


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, inverted: each of the 256 printable stand-in characters
    a ByteLevel vocabulary spells its tokens with -> the byte it stands for (Radford et
    al. 2019, `bytes_to_unicode` of the GPT-2 encoder)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, n = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + n)
            n += 1
    return {c: b for b, c in chars.items()}


@dataclass(frozen=True)
class Heal:
    """Token healing of one segment's end: keep its first `keep` ids; the fill must start
    with `text` (what the removed ids spelled), which the fill's text then drops."""

    keep: int
    removed: int  # ids removed (the fill may take that many more tokens to re-cover them)
    text: str


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
        self._heal_index: tuple[list[bytes], list[int], dict[bytes, int], list[bytes | None]] | None = None
        self._heal_lock = threading.Lock()

    def encode(self, text: str) -> list[int]:
        if not text:
            return []
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=False)

    def decode_healed(self, ids: list[int], heal: "Heal | None") -> str:
        """A hole's text: its ids decoded, less the healed text they start by re-creating
        ("" while they have not re-created all of it yet)."""
        text = self.decode(ids)
        if heal is None:
            return text
        return text[len(heal.text):] if text.startswith(heal.text) else ""

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    # -- token healing -------------------------------------------------------------------

    def prepare_healing(self) -> None:
        """Build the token-healing index in a background thread (0.4-1.2 s of Python for a
        150k vocabulary on the dev VM), so the first healed fill does not wait for all of it."""
        threading.Thread(target=self._index, name="diffill-heal-index", daemon=True).start()

    def _index(self):
        """(sorted token bytes, their ids, bytes -> id, bytes by id), built once (by
        prepare_healing's thread or the first caller; a second caller waits for it); all
        empty for a vocabulary that is not byte-level."""
        if self._heal_index is None:
            with self._heal_lock:
                if self._heal_index is None:
                    try:
                        self._heal_index = self._build_index()
                    except Exception:  # an odd vocabulary: fills go on, unhealed
                        log.warning("token healing off: its index could not be built", exc_info=True)
                        self._heal_index = ([], [], {}, [])
        return self._heal_index

    def _build_index(self):
        if type(self._tok.decoder).__name__ != "ByteLevel" or self._tok.pre_tokenizer is None:
            return [], [], {}, []
        dec = _byte_decoder()
        special = set(self._tok.get_added_tokens_decoder())
        by_id: list[bytes | None] = [None] * self.vocab_size
        for token, tid in self._tok.get_vocab(with_added_tokens=False).items():
            if tid not in special and tid < self.vocab_size and all(c in dec for c in token):
                by_id[tid] = bytes(dec[c] for c in token)
        pairs = sorted((b, i) for i, b in enumerate(by_id) if b)
        return [b for b, _ in pairs], [i for _, i in pairs], {b: i for b, i in pairs}, by_id

    def token_bytes(self, tid: int) -> bytes | None:
        """The bytes a text token spells; None for special tokens and ids past the vocabulary."""
        by_id = self._index()[3]
        return by_id[tid] if 0 <= tid < len(by_id) else None

    def heal_point(self, text: str, ids: list[int], whole: bool = False) -> Heal | None:
        """Token healing of `text` (tokenized as `ids`): when it ends inside a pre-token chunk
        (its last character is not whitespace), the ids before that chunk and the chunk's
        text; None when it ends on whitespace, the chunk is longer than HEAL_MAX_TOKENS or
        the vocabulary is not byte-level. whole: only when one token can re-create the
        whole chunk (a diffusion hole constrains only its first position)."""
        if not text or not ids or text[-1].isspace() or not self._index()[0]:
            return None
        tail = text[-HEAL_WINDOW_CHARS:]
        chunks = self._tok.pre_tokenizer.pre_tokenize_str(tail)
        if not chunks:
            return None
        chunk = tail[chunks[-1][1][0]:]
        try:
            want = chunk.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: leave the prompt as it is
            return None
        got, k = b"", len(ids)
        while k > 0 and len(got) < len(want) and len(ids) - k < HEAL_MAX_TOKENS:
            b = self.token_bytes(ids[k - 1])
            if b is None:
                return None
            got, k = b + got, k - 1
        if got != want or (whole and not self._extensions(want)):
            return None
        return Heal(k, len(ids) - k, chunk)

    def _extensions(self, data: bytes) -> list[int]:
        """Ids whose bytes start with `data`."""
        keys, ids, _, _ = self._index()
        lo = hi = bisect.bisect_left(keys, data)
        while hi < len(keys) and keys[hi].startswith(data):
            hi += 1
        return ids[lo:hi]

    def heal_candidates(self, pending: bytes, whole: bool = False) -> list[int]:
        """Ids a healed fill's next token may be while `pending` (removed bytes not yet
        re-created) is non-empty: those that start with all of it and, unless whole, those
        that spell a non-empty proper prefix of it (the rest then comes next)."""
        out = self._extensions(pending)
        if not whole:
            by_bytes = self._index()[2]
            out = out + [by_bytes[pending[:n]] for n in range(1, len(pending)) if pending[:n] in by_bytes]
        return out
