from hypothesis import given, settings, strategies as st

from lsp_server.cache import Entry, FillCache, _match, match_reference


def test_typed_ahead_returns_the_rest_without_the_model():
    cache = FillCache()
    src = "def f(x):\n    return \n".encode()
    cursor = src.index(b"return ") + len(b"return ")
    cache.put("u", src, cursor, cursor, ["x + 1", "x"])
    typed = src[:cursor] + b"x " + src[cursor:]
    hit = cache.get("u", typed, cursor + 2)
    assert hit is not None and hit.texts == ("+ 1",) and hit.typed == "x " and hit.start == hit.end == cursor + 2
    assert cache.get("u", src, cursor).texts == ("x + 1", "x")  # exact repeat
    assert cache.get("u", src[:cursor] + b"y" + src[cursor:], cursor + 1) is None  # diverged
    assert cache.get("u", src[:cursor] + b"x + 1" + src[cursor:], cursor + 5) is None  # all typed
    assert cache.get("other", src, cursor) is None
    assert (cache.hits, cache.misses) == (2, 3)


def test_replace_span_keeps_its_length_and_changes_elsewhere_miss():
    cache = FillCache()
    src = b"a = pass_me\nb = 2\n"
    cache.put("u", src, 4, 11, ["compute()"])
    hit = cache.get("u", b"a = compass_me\nb = 2\n", 7)
    assert hit is not None and hit.texts == ("pute()",) and (hit.start, hit.end) == (7, 14)
    assert cache.get("u", b"a = compass_me\nb = 3\n", 7) is None


def test_non_ascii_typed_text():
    cache = FillCache()
    src = "s = ''\n".encode()
    cache.put("u", src, 5, 5, ["héllo"])
    typed = "s = 'hé'\n".encode()
    hit = cache.get("u", typed, 5 + len("hé".encode()))
    assert hit is not None and hit.texts == ("llo",)
    assert cache.get("u", typed, 6) is None  # cursor inside the é: not a clean prefix


def test_bounded_per_document_and_drop():
    cache = FillCache(per_doc=2)
    for i in range(4):
        cache.put("u", b"x" * i, i, i, [f"t{i}"])
    assert cache.get("u", b"", 0) is None and cache.get("u", b"xxx", 3).texts == ("t3",)
    cache.drop("u")
    assert cache.get("u", b"xxx", 3) is None


@settings(max_examples=300, deadline=None)
@given(
    head=st.text(max_size=6), tail=st.text(max_size=6), fills=st.lists(st.text(min_size=1, max_size=5), min_size=1, max_size=3),
    typed=st.text(max_size=4), cut=st.integers(-2, 2), replaced=st.integers(0, 3),
)
def test_match_agrees_with_reference(head, tail, fills, typed, cut, replaced):
    h, t = head.encode("utf-8", "surrogatepass"), tail.encode("utf-8", "surrogatepass")
    entry = Entry(h, t, min(replaced, len(t)), tuple(fills))
    source = h + typed.encode("utf-8", "surrogatepass") + t
    cursor = len(h) + len(typed.encode("utf-8", "surrogatepass")) + cut
    assert _match(entry, source, cursor) == match_reference(entry, source, cursor)
