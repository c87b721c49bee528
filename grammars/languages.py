"""Language registry: file extensions and LSP languageIds to tree-sitter languages.

Owns which languages diffill parses, how a path or languageId maps to one, and the
cached tree_sitter.Language objects and per-thread parsers built from the grammar
wheels (`tree-sitter-python` etc.; never tree-sitter-language-pack, which downloads
grammars at run time). Must not know queries, documents or planning rules beyond the
few syntax facts stored in `Lang`.
"""

from __future__ import annotations

import functools
import importlib
import os
import threading
from dataclasses import dataclass, field

import tree_sitter as ts


@dataclass(frozen=True)
class Lang:
    """One parseable language.

    name:        our name, also the query folder (grammars/queries/<name>/)
    language:    the tree_sitter.Language
    offside:     True where indentation closes blocks (Python)
    opener:      the character that opens a block at the end of a line
    line_comment: the line comment token (fixtures and docs use it)
    """

    name: str
    language: ts.Language = field(repr=False, compare=False)
    offside: bool = False
    opener: str = "{"
    line_comment: str = "//"

    def parser(self) -> ts.Parser:
        """A parser for this language, cached per thread (parsers are not thread-safe)."""
        return _thread_parser(self.name)

    def new_parser(self) -> ts.Parser:
        """A fresh parser that the caller owns (a Document keeps one)."""
        return ts.Parser(self.language)


# name -> (module, function in the grammar wheel, Lang keyword arguments)
_GRAMMARS: dict[str, tuple[str, str, dict]] = {
    "python": ("tree_sitter_python", "language", {"offside": True, "opener": ":", "line_comment": "#"}),
    "javascript": ("tree_sitter_javascript", "language", {}),
    "typescript": ("tree_sitter_typescript", "language_typescript", {}),
    "tsx": ("tree_sitter_typescript", "language_tsx", {}),
    "go": ("tree_sitter_go", "language", {}),
    "rust": ("tree_sitter_rust", "language", {}),
    "c": ("tree_sitter_c", "language", {}),
    "cpp": ("tree_sitter_cpp", "language", {}),
    "java": ("tree_sitter_java", "language", {}),
}

LANGUAGE_NAMES: tuple[str, ...] = tuple(_GRAMMARS)

# LSP languageIds (https://microsoft.github.io/language-server-protocol/specification
# "Text Document Item") and a few common aliases -> our name.
LANGUAGE_IDS: dict[str, str] = {
    "python": "python", "py": "python",
    "javascript": "javascript", "javascriptreact": "javascript", "js": "javascript", "jsx": "javascript",
    "typescript": "typescript", "ts": "typescript",
    "typescriptreact": "tsx", "tsx": "tsx",
    "go": "go", "golang": "go",
    "rust": "rust", "rs": "rust",
    "c": "c",
    "cpp": "cpp", "c++": "cpp", "cuda-cpp": "cpp",
    "java": "java",
}

EXTENSIONS: dict[str, str] = {
    ".py": "python", ".pyi": "python", ".pyw": "python",
    ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript", ".jsx": "javascript",
    ".ts": "typescript", ".mts": "typescript", ".cts": "typescript",
    ".tsx": "tsx",
    ".go": "go",
    ".rs": "rust",
    ".c": "c", ".h": "c",
    ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp", ".c++": "cpp", ".hpp": "cpp", ".hh": "cpp",
    ".hxx": "cpp", ".cu": "cpp",
    ".java": "java",
}
# gcc's convention: an upper-case .C / .H file is C++.
_CASED_EXTENSIONS = {".C": "cpp", ".H": "cpp"}


@functools.lru_cache(maxsize=None)
def get_lang(name: str) -> Lang | None:
    """The Lang called `name` (one of LANGUAGE_NAMES), or None if unknown or not installed."""
    spec = _GRAMMARS.get(name)
    if spec is None:
        return None
    module, func, kwargs = spec
    try:
        capsule = getattr(importlib.import_module(module), func)()
    except (ImportError, AttributeError):
        return None
    return Lang(name=name, language=ts.Language(capsule), **kwargs)


def language_for(path: str | None = None, language_id: str | None = None) -> Lang | None:
    """Map an LSP languageId (preferred) or a file path's extension to a Lang.

    Unknown or missing -> None: the caller falls back to line-based planning.
    """
    if language_id:
        name = LANGUAGE_IDS.get(language_id.lower())
        if name is not None:
            return get_lang(name)
    if path:
        ext = os.path.splitext(str(path))[1]
        name = _CASED_EXTENSIONS.get(ext) or EXTENSIONS.get(ext.lower())
        if name is not None:
            return get_lang(name)
    return None


def resolve(lang: "Lang | str | None") -> Lang | None:
    """Accept a Lang, one of our names, a languageId, or an extension/path."""
    if lang is None or isinstance(lang, Lang):
        return lang
    if not isinstance(lang, str):
        return None
    found = get_lang(lang) or language_for(language_id=lang)
    if found is None:
        ext = lang if lang.startswith(".") else os.path.splitext(lang)[1] or "." + lang
        found = language_for(path="x" + ext)
    return found


_local = threading.local()


def _thread_parser(name: str) -> ts.Parser:
    parsers = getattr(_local, "parsers", None)
    if parsers is None:
        parsers = _local.parsers = {}
    parser = parsers.get(name)
    if parser is None:
        lang = get_lang(name)
        assert lang is not None, name
        parser = parsers[name] = lang.new_parser()
    return parser
