"""The work the handlers hand off (server.py stays thin): tested without a server."""

from __future__ import annotations

from types import SimpleNamespace

from lsprotocol import types

from lsp_server import conversions
from lsp_server.documents import DocumentStore, with_selected
from lsp_server.features.fill_holes import holes_near
from lsp_server.settings import Settings


def test_changes_become_plain_tuples():
    rng = types.Range(start=types.Position(1, 2), end=types.Position(1, 4))
    got = conversions.changes([types.TextDocumentContentChangePartial(range=rng, text="ab"),
                           types.TextDocumentContentChangeWholeDocument(text="all")])
    assert got == [((1, 2), (1, 4), "ab"), (None, None, "all")]


def test_with_selected_applies_the_item_on_a_copy():
    store = DocumentStore()
    entry = store.open("u", "python", 1, "import os\nos.pa\n")
    got = with_selected(entry, (1, 3), (1, 5), "path", "utf-16")
    assert got is not None
    shadow, after = got
    assert shadow.text == "import os\nos.path\n" and after == (1, 7)
    assert entry.doc.text == "import os\nos.pa\n"  # the open document is untouched
    assert with_selected(entry, (0, 0), (1, 1), "x", "utf-16") is None  # several lines
    assert with_selected(entry, (9, 0), (9, 1), "x", "utf-16") is None  # outside


def test_holes_near():
    store = DocumentStore()
    entry = store.open("u", "python", 1, "a = <|fill|>\n\ndef f():\n    pass\n")
    ls = SimpleNamespace(settings=Settings(), encoding="utf-16")
    assert holes_near(ls, entry.doc, (0, 5), (0, 5)) == (True, 2)
    assert holes_near(ls, entry.doc, (1, 0), (1, 0)) == (False, 2)
    assert holes_near(ls, entry.doc, (3, 5), (3, 6)) == (True, 2)  # inside `pass`
    assert holes_near(ls, entry.doc, (99, 0), (99, 0)) == (False, 2)
