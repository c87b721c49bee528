"""Query files and the capture vocabulary they may use. The files sit beside this module,
so `grammars.queries` names both: the `<lang>/<purpose>.scm` files and the code that reads them.

Owns loading `grammars/queries/<lang>/<purpose>.scm` (with helix-style
`; inherits: other` first lines, so TypeScript reuses JavaScript's patterns), compiling
them once per language, checking their captures against the one documented
vocabulary, and running a query over a byte range only (the planner must not run
whole-file queries on the keystroke path). Must not know planning rules.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import tree_sitter as ts

from grammars.languages import get_lang

QUERY_DIR = Path(__file__).parent  # <lang>/<purpose>.scm beside this file

# purpose -> the capture names its files may use (names starting with "_" are private
# helpers for predicates and are never returned). docs/grammars.md explains each one.
VOCABULARY: dict[str, frozenset[str]] = {
    "infill": frozenset({"body", "block", "statement", "expression", "arguments", "parameters", "condition"}),
    "holes": frozenset({"hole"}),
}
PURPOSES = tuple(VOCABULARY)

_INHERITS = re.compile(r"^;+\s*inherits\s*:\s*([\w, ]+)$")


class QueryError(ValueError):
    """A query file is missing, does not compile, or uses a capture outside the vocabulary."""


def query_source(lang: str, purpose: str, _seen: frozenset = frozenset()) -> str:
    """The text of a query file with its inherited files prepended."""
    path = QUERY_DIR / lang / f"{purpose}.scm"
    if not path.is_file():
        return ""
    text = path.read_text(encoding="utf-8")
    first = text.split("\n", 1)[0].strip()
    match = _INHERITS.match(first)
    parts = []
    if match:
        for parent in (p.strip() for p in match.group(1).split(",")):
            if parent and parent not in _seen and parent != lang:
                parts.append(query_source(parent, purpose, _seen | {lang}))
    parts.append(text)
    return "\n".join(parts)


@functools.lru_cache(maxsize=None)
def load(lang: str, purpose: str) -> ts.Query | None:
    """The compiled query of `purpose` for language `lang`; None if it has no such file."""
    if purpose not in VOCABULARY:
        raise QueryError(f"unknown query purpose {purpose!r}; expected one of {PURPOSES}")
    if get_lang(lang) is None:
        return None
    source = query_source(lang, purpose)
    if not source.strip():
        return None
    return compile_query(lang, source, purpose)


def compile_query(lang: str, source: str, purpose: str) -> ts.Query:
    """Compile query text for `lang` and check its captures against the vocabulary."""
    where = f"grammars/queries/{lang}/{purpose}.scm"
    language = get_lang(lang)
    if language is None:
        raise QueryError(f"{where}: unknown language {lang!r}")
    try:
        query = ts.Query(language.language, source)
    except Exception as exc:  # tree_sitter.QueryError and friends: name the file
        raise QueryError(f"{where}: {exc}") from None
    bad = sorted(set(capture_names(query)) - VOCABULARY[purpose])
    bad = [name for name in bad if not name.startswith("_")]
    if bad:
        raise QueryError(f"{where}: captures outside the vocabulary: {bad}")
    return query


def capture_names(query: ts.Query) -> list[str]:
    return [query.capture_name(i) for i in range(query.capture_count)]


def captures_in_range(query: ts.Query, node: ts.Node, start: int, end: int) -> list[tuple[str, ts.Node]]:
    """(capture name, node) for captures of `query` intersecting bytes [start, end).

    Restricting the cursor to a byte range makes the query visit only the nodes on the
    path to that range and their near siblings, not the whole file.
    """
    cursor = ts.QueryCursor(query)
    cursor.set_byte_range(max(0, start), max(start + 1, end))
    found: list[tuple[str, ts.Node]] = []
    for name, nodes in cursor.captures(node).items():
        if not name.startswith("_"):
            found.extend((name, n) for n in nodes)
    return found
