"""A small module with holes for `diffill fill examples/holes.py`.

Each fill marker below and each placeholder body (`pass` or `...`) is a hole; diffill
fills them one after another (each sees the fills before it) and prints the file.
"""


def mean(values: list[float]) -> float:
    """The arithmetic mean of a non-empty list."""
    return <|fill|>


def word_counts(text: str) -> dict[str, int]:
    """How often each whitespace-separated word occurs in `text`."""
    counts: dict[str, int] = {}
    for word in text.split():
        <|fill|>
    return counts


def is_palindrome(s: str) -> bool:
    """Whether `s` reads the same backwards, ignoring case and spaces."""
    ...


if __name__ == "__main__":
    print(mean([1.0, 2.0, 3.0]), word_counts("a b a"), is_palindrome("Never odd or even"))
