"""Metrics: the fast Levenshtein against an obviously correct reference, and the edit-similarity rules."""
from functools import lru_cache

from hypothesis import given, settings
from hypothesis import strategies as st

from evaluation.metrics import edit_similarity, exact_match, levenshtein, median, normalize


def reference_levenshtein(a: str, b: str) -> int:
    """The textbook recursive definition, memoized."""

    @lru_cache(maxsize=None)
    def d(i: int, j: int) -> int:
        if i == 0:
            return j
        if j == 0:
            return i
        return min(d(i - 1, j) + 1, d(i, j - 1) + 1, d(i - 1, j - 1) + (a[i - 1] != b[j - 1]))

    return d(len(a), len(b))


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab c\n(", max_size=12), st.text(alphabet="ab c\n(", max_size=12))
def test_levenshtein_matches_reference(a, b):
    assert levenshtein(a, b) == reference_levenshtein(a, b)
    assert levenshtein(a, b) == levenshtein(b, a)


def test_levenshtein_known_values():
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("", "abc") == 3
    assert levenshtein("abc", "abc") == 0
    assert levenshtein("return a + b", "return a - b") == 1


def test_normalize_trims_trailing_space_and_blank_edges():
    assert normalize("\n\n  x = 1   \r\n  y\t\n\n") == "  x = 1\n  y"
    assert normalize("   ") == ""


def test_exact_match_and_edit_similarity():
    assert exact_match("x = 1  \n", "x = 1")
    assert not exact_match("x = 2", "x = 1")
    assert edit_similarity("", "") == 1.0
    assert edit_similarity("", "abcd") == 0.0
    assert edit_similarity("abcd", "abcd") == 1.0
    assert edit_similarity("abcd", "abce") == 0.75


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=20), st.text(max_size=20))
def test_edit_similarity_is_bounded(a, b):
    assert 0.0 <= edit_similarity(a, b) <= 1.0


def test_median():
    assert median([]) == 0.0
    assert median([3.0, 1.0, 2.0]) == 2.0
