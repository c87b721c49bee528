"""Completion cache keyed on document state, with typed-ahead reuse.

Owns: remembering the fills shown for a document and answering a later request from
them without the model when the document is the same text with the user having typed
the first characters of a shown fill at its start.

An entry holds the utf-8 bytes before the filled span (``head``), the bytes from the
span start to the end of the document (``tail``), the length of the replaced span and
the fill texts. A request at byte offset ``c`` in ``source`` hits when

    source == head + typed + tail    and    typed is a prefix of a fill

(``typed`` empty is an exact repeat). The answer replaces ``[c, c + replaced)`` with the
rest of each matching fill. Checks use ``startswith``/``endswith`` on bytes (memcmp,
no copies), so a hit costs microseconds even for a large document.

Must not know: LSP types, the core, grammars.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

# Entries per document: a few are enough for typing ahead and for going back and
# forth between two spots; the cache is per document and dropped on close.
_PER_DOC = 8


@dataclass(frozen=True)
class Entry:
    head: bytes
    tail: bytes
    replaced: int  # bytes of the original span after the start (0 for an insertion)
    texts: tuple[str, ...]  # finalized fills, best first


@dataclass(frozen=True)
class Hit:
    start: int  # byte offset where the remaining fill goes (the cursor)
    end: int  # start + replaced
    texts: tuple[str, ...]  # remaining fills, best first, none empty
    typed: str  # what the user typed of the fill since it was shown


class FillCache:
    def __init__(self, per_doc: int = _PER_DOC) -> None:
        self._docs: dict[str, OrderedDict[tuple[int, int], Entry]] = {}
        self._per_doc = per_doc
        self.hits = 0
        self.misses = 0

    def put(self, uri: str, source: bytes, start: int, end: int, texts: list[str]) -> None:
        texts_t = tuple(t for t in texts if t)
        if not texts_t:
            return
        entries = self._docs.setdefault(uri, OrderedDict())
        entry = Entry(source[:start], source[start:], end - start, texts_t)
        key = (len(entry.head), hash(entry.head[-64:]))
        entries.pop(key, None)
        entries[key] = entry
        while len(entries) > self._per_doc:
            entries.popitem(last=False)

    def get(self, uri: str, source: bytes, cursor: int) -> Hit | None:
        for entry in reversed(self._docs.get(uri, {}).values()):
            hit = _match(entry, source, cursor)
            if hit is not None:
                self.hits += 1
                return hit
        self.misses += 1
        return None

    def drop(self, uri: str) -> None:
        self._docs.pop(uri, None)


def _match(entry: Entry, source: bytes, cursor: int) -> Hit | None:
    n_typed = cursor - len(entry.head)
    if n_typed < 0 or len(source) != len(entry.head) + n_typed + len(entry.tail):
        return None
    if not (source.startswith(entry.head) and source.endswith(entry.tail)):
        return None
    try:
        typed = source[len(entry.head) : cursor].decode("utf-8")
    except UnicodeDecodeError:
        return None
    rest = tuple(t[len(typed) :] for t in entry.texts if t.startswith(typed) and len(t) > len(typed))
    if not rest:
        return None
    return Hit(cursor, cursor + entry.replaced, rest, typed)


def match_reference(entry: Entry, source: bytes, cursor: int) -> Hit | None:
    """Slow, obviously-correct reference of ``_match`` for the tests."""
    for n in range(0, len(source) + 1):
        typed_b = source[len(entry.head) : len(entry.head) + n]
        if len(typed_b) != n or entry.head + typed_b + entry.tail != source or len(entry.head) + n != cursor:
            continue
        try:
            typed = typed_b.decode("utf-8")
        except UnicodeDecodeError:
            return None
        rest = tuple(t[len(typed) :] for t in entry.texts if t.startswith(typed) and len(t) > len(typed))
        return Hit(cursor, cursor + entry.replaced, rest, typed) if rest else None
    return None
