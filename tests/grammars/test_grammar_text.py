"""The bracket scanner: strings, comments and Rust char literals versus lifetimes."""
import pytest

from grammars.languages import get_lang
from grammars.text import BracketScan, scanner_for


@pytest.mark.parametrize("code,net", [
    ("let c = '(';", (0, 0)),                       # a char literal holds no bracket
    ("match c { '\\'' => 1, '{' => 2 }", (0, 0)),   # escaped quote, then a brace literal
    ("fn f<'a>(x: &'a str) {", (0, 1)),             # lifetimes are no quotes: the { still opens
    ("let e = '\\u{1F600}'; g(", (0, 1)),           # unicode escape with braces inside
    ("x == ']' && y[0]", (0, 0)),
    ("// a ( comment\nf(", (0, 1)),
])
def test_rust_char_literals_and_lifetimes(code, net):
    assert scanner_for(get_lang("rust")).net(code) == net


def test_single_quote_strings_elsewhere():
    assert BracketScan("#").net("s = '(' + \"[\"") == (0, 0)
    assert scanner_for(get_lang("python")).net("f(')'") == (0, 1)
