from lsp_server.documents import DocumentStore


def test_incremental_edits_in_each_encoding():
    # the end of line 0 is column 8 in utf-16 units, 10 bytes, 7 code points; each
    # edit appends one "x" there
    store = DocumentStore()
    store.open("u", "python", 1, "s = '😀'\n")
    for version, (enc, col) in enumerate([("utf-16", 8), ("utf-8", 11), ("utf-32", 9)], start=2):
        store.change("u", version, [((0, col), (0, col), "x")], enc)
    entry = store.get("u")
    assert entry.version == 4 and entry.doc.text == "s = '😀'xxx\n"


def test_refused_edit_makes_the_document_unusable_until_a_full_change():
    store = DocumentStore()
    entry = store.open("u", "python", 1, "a = 1\n")

    class Refusing:
        def apply_change(self, *args, **kwargs):
            raise RuntimeError("nope")

    entry.doc = Refusing()
    store.change("u", 2, [((0, 0), (0, 0), "x")], "utf-16")
    assert entry.doc is None and "edit refused" in entry.error
    store.change("u", 3, [((0, 0), (0, 0), "y")], "utf-16")  # still unusable, no crash
    assert entry.doc is None
    store.change("u", 4, [(None, None, "b = 2\n")], "utf-16")
    assert entry.doc is not None and entry.doc.text == "b = 2\n" and entry.version == 4


def test_unknown_and_closed_documents():
    store = DocumentStore()
    assert store.change("nope", 1, [(None, None, "x")], "utf-16") is None
    store.open("u", "python", 1, "x")
    store.close("u")
    assert store.get("u") is None and len(store) == 0


def test_huge_documents_are_planned_without_a_tree(monkeypatch):
    from lsp_server import documents

    monkeypatch.setattr(documents, "MAX_PARSED_CHARS", 10)
    store = DocumentStore()
    small = store.open("a", "python", 1, "x = 1\n")
    big = store.open("b", "python", 1, "x = 1\n" * 10)
    assert small.doc.tree is not None and big.doc.tree is None and big.language_id == "python"
