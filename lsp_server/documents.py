"""Open documents of the server: one ``grammars.Document`` (with its incremental
tree) per uri, its LSP version and languageId.

Owns: applying didOpen/didChange/didClose to grammars documents in the negotiated
position encoding (the only copy of the text: pygls keeps none, see
runtime.DiffillProtocol), and documents it cannot use (text grammars cannot hold, an
edit it refuses): kept as unusable, every request on them gets an empty answer.

Must not know: lsprotocol types beyond plain (line, character) tuples, the core.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterable

log = logging.getLogger(__name__)

# Above this size a document is planned line by line, without a syntax tree: parsing,
# planning and ranking a huge tree take seconds each on the keystroke path (like editors
# that turn tree-sitter off for huge files; docs/benchmarks.md, "Huge documents").
MAX_PARSED_CHARS = 2_000_000

# (start, end, text); start/end are (line, character) or None for a full replacement
Change = tuple[tuple[int, int] | None, tuple[int, int] | None, str]


@dataclass
class OpenDoc:
    uri: str
    language_id: str
    version: int
    doc: Any | None  # grammars.document.Document, None when the text is unusable
    error: str = ""


def make_document(text: str, language_id: str, uri: str) -> tuple[Any | None, str]:
    """A grammars Document, or (None, one-line reason) for text it cannot hold."""
    from grammars.document import Document

    parse_as = language_id if len(text) <= MAX_PARSED_CHARS else None
    try:
        return Document(text, language_id=parse_as, path=None), ""
    except Exception as exc:  # binary junk, encoding errors: never crash the server
        reason = f"{uri}: cannot use this document ({type(exc).__name__}: {str(exc)[:120]})"
        log.warning(reason)
        return None, reason


def with_selected(entry: OpenDoc, start: tuple[int, int], end: tuple[int, int], text: str,
                  encoding: str) -> tuple[Any, tuple[int, int]] | None:
    """A copy of the document with ``text`` over start..end (the completion item the editor
    has selected, LSP 3.18 selectedCompletionInfo) and the position after that text;
    None for a range over several lines, outside the document, or text it refuses."""
    from grammars.document import encode

    if entry.doc is None or start[0] != end[0]:
        return None
    shadow, _ = make_document(entry.doc.text, entry.language_id, entry.uri)
    if shadow is None:
        return None
    lo = shadow.offset_at(*start, encoding=encoding)
    if lo is None or shadow.offset_at(*end, encoding=encoding) is None:  # outside (issue 17)
        return None
    try:
        shadow.apply_change(start, end, text, encoding=encoding)
        return shadow, shadow.position_at(lo + len(encode(text)), encoding=encoding)
    except Exception as exc:  # lone surrogates and the like: no completion, never a crash
        log.warning("selectedCompletionInfo: %s", exc)
        return None


class DocumentStore:
    def __init__(self) -> None:
        self._docs: dict[str, OpenDoc] = {}

    def open(self, uri: str, language_id: str, version: int, text: str) -> OpenDoc:
        doc, error = make_document(text, language_id, uri)
        entry = OpenDoc(uri, language_id, version, doc, error)
        self._docs[uri] = entry
        return entry

    def change(self, uri: str, version: int, changes: Iterable[Change], encoding: str) -> OpenDoc | None:
        """Apply LSP content changes. A document that refuses an edit (grammars
        clamps odd ranges, so this is a bug or junk) becomes unusable until a full
        change or a reopen: answering from a text we know is wrong would be worse."""
        entry = self._docs.get(uri)
        if entry is None:
            return None
        entry.version = version
        for start, end, text in changes:
            if start is None or end is None:  # a full replacement heals an unusable document
                entry.doc, entry.error = make_document(text, entry.language_id, uri)
                continue
            if entry.doc is None:
                continue
            try:
                entry.doc.apply_change(start, end, text, encoding=encoding)
            except Exception as exc:
                entry.doc, entry.error = None, f"{uri}: edit refused ({type(exc).__name__}: {str(exc)[:120]})"
                log.warning(entry.error)
        return entry

    def close(self, uri: str) -> None:
        self._docs.pop(uri, None)

    def get(self, uri: str) -> OpenDoc | None:
        return self._docs.get(uri)

    def __len__(self) -> int:
        return len(self._docs)
