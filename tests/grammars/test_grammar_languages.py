"""Language registry and query files with their capture vocabulary."""

from __future__ import annotations

import pytest

from grammars import queries
from grammars.languages import LANGUAGE_NAMES, get_lang, language_for, resolve


@pytest.mark.parametrize(("path", "lang_id", "name"), [
    ("a.py", None, "python"), ("a.pyi", None, "python"), ("x.jsx", None, "javascript"),
    (None, "javascriptreact", "javascript"), (None, "typescript", "typescript"),
    (None, "typescriptreact", "tsx"), ("a.tsx", None, "tsx"), ("m.go", None, "go"),
    ("lib.rs", None, "rust"), ("a.h", None, "c"), ("a.C", None, "cpp"), ("a.hpp", None, "cpp"),
    (None, "cpp", "cpp"), (None, "java", "java"), ("A.JAVA", None, "java"),
    ("notes.txt", None, None), (None, "markdown", None), (None, None, None),
    ("a.py", "rust", "rust"),  # the languageId wins over the extension
    ("a.py", "plaintext", "python"),  # an unknown languageId falls back to the path
])
def test_language_for(path, lang_id, name):
    lang = language_for(path=path, language_id=lang_id)
    assert (lang.name if lang else None) == name


def test_languages_are_cached_and_parse():
    for name in LANGUAGE_NAMES:
        lang = get_lang(name)
        assert lang is get_lang(name)
        assert lang.parser() is lang.parser()
        assert lang.parser().parse(b"x").root_node is not None
    assert resolve("rs").name == "rust" and resolve(".py").name == "python" and resolve("nope") is None


@pytest.mark.parametrize("name", LANGUAGE_NAMES)
@pytest.mark.parametrize("purpose", queries.PURPOSES)
def test_every_query_compiles_and_uses_only_the_vocabulary(name, purpose):
    query = queries.load(name, purpose)
    assert query is not None, f"grammars/queries/{name}/{purpose}.scm missing"
    names = queries.capture_names(query)
    public = {n for n in names if not n.startswith("_")}
    assert public and public <= queries.VOCABULARY[purpose]


def test_vocabulary_check_rejects_unknown_captures():
    with pytest.raises(queries.QueryError, match="outside the vocabulary"):
        queries.compile_query("python", "(identifier) @variable", "infill")
    with pytest.raises(queries.QueryError, match="python"):
        queries.compile_query("python", "(no_such_node) @body", "infill")
    assert queries.compile_query("python", "((identifier) @_x) @expression", "infill")


def test_inherits_prepends_the_parent_file():
    assert "statement_block" in queries.query_source("tsx", "infill")
