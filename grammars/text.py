"""Small text facts about source lines: indentation, identifiers, bracket depth.

Owns the language-light lexical helpers that planning and post-processing share:
indentation width and unit, whether a character belongs to an identifier, and a
bracket scanner that skips strings and comments. Must not know trees or plans.
"""

from __future__ import annotations

import re

OPENERS = "([{"
CLOSERS = ")]}"
PAIRS = dict(zip(CLOSERS, OPENERS))
# A Rust char literal ('(' or '\n' or '\u{1F600}'); a quote that starts none is a lifetime or label.
RUST_CHAR = re.compile(r"'(?:\\(?:u\{[0-9a-fA-F]{1,6}\}|x[0-9a-fA-F]{2}|.)|[^\\'\n])'")


def is_ident_char(ch: str) -> bool:
    return bool(ch) and (ch.isalnum() or ch == "_" or ch == "$")


def leading_ws(line: str) -> str:
    return line[: len(line) - len(line.lstrip(" \t"))]


def indent_width(ws: str, tab_size: int = 4) -> int:
    """Columns taken by leading whitespace `ws`, tabs advancing to the next tab stop."""
    col = 0
    for ch in ws:
        if ch == "\t":
            col += tab_size - col % tab_size
        elif ch == " ":
            col += 1
        else:
            break
    return col


def make_indent(width: int, tab_size: int = 4, insert_spaces: bool = True) -> str:
    if insert_spaces or tab_size <= 0:
        return " " * width
    return "\t" * (width // tab_size) + " " * (width % tab_size)


def guess_indent_unit(lines: list[str], default: str) -> str:
    """The document's indentation step, from the first indented lines it has."""
    widths = []
    for line in lines:
        if not line.strip():
            continue
        ws = leading_ws(line)
        if ws.startswith("\t"):
            return "\t"
        if ws:
            widths.append(len(ws))
    if not widths:
        return default
    step = min(widths)
    return " " * step if step in (2, 3, 4, 8) else default


class BracketScan:
    """Bracket depth of code, skipping string literals and comments.

    A deliberately simple lexer (quotes, line and block comments, Rust char literals
    skipped but lifetimes not taken for quotes): it is only asked "where does depth
    change" on a few lines.
    """

    def __init__(self, line_comment: str = "//", single_quote_strings: bool = True,
                 char_literals: bool = False) -> None:
        self.line_comment = line_comment
        self.block_comment = line_comment == "//"
        self.single_quote_strings = single_quote_strings
        self.char_literals = char_literals

    def events(self, text: str):
        """Yield (index, char) for each bracket outside strings and comments."""
        i, n = 0, len(text)
        quotes = "\"'`" if self.single_quote_strings else "\"`"
        while i < n:
            ch = text[i]
            if text.startswith(self.line_comment, i):
                j = text.find("\n", i)
                i = n if j < 0 else j
                continue
            if self.block_comment and text.startswith("/*", i):
                j = text.find("*/", i + 2)
                i = n if j < 0 else j + 2
                continue
            if ch == "'" and self.char_literals:
                m = RUST_CHAR.match(text, i)
                i = m.end() if m else i + 1
                continue
            if ch in quotes:
                j = i + 1
                while j < n and text[j] != ch and not (text[j] == "\n" and ch != "`"):
                    j += 2 if text[j] == "\\" else 1
                i = j + 1
                continue
            if ch in OPENERS or ch in CLOSERS:
                yield i, ch
            i += 1

    def net(self, text: str) -> tuple[int, int]:
        """(unmatched closers, unmatched openers) of `text`."""
        stack: list[str] = []
        closers = 0
        for _, ch in self.events(text):
            if ch in OPENERS:
                stack.append(ch)
            elif stack and stack[-1] == PAIRS[ch]:
                stack.pop()
            elif stack:
                stack.pop()  # mismatched pair: count it as closed, not as two errors
            else:
                closers += 1
        return closers, len(stack)

    def imbalance(self, text: str) -> int:
        closers, openers = self.net(text)
        return closers + openers

    def cut_below(self, text: str, min_depth: int) -> int:
        """Index of the first bracket that takes depth below `min_depth`, else len(text)."""
        depth = 0
        for i, ch in self.events(text):
            depth += 1 if ch in OPENERS else -1
            if depth < min_depth:
                return i
        return len(text)


def scanner_for(lang) -> BracketScan:
    """A BracketScan for a Lang (None: C-like defaults)."""
    if lang is None:
        return BracketScan()
    rust = lang.name == "rust"
    return BracketScan(lang.line_comment, single_quote_strings=not rust, char_literals=rust)
