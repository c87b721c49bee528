"""The sample files with holes (examples/): each has holes, and good fills make them valid."""

from __future__ import annotations

from pathlib import Path

import pytest

from grammars.document import Document
from grammars.holes import find_holes
from grammars.planner import assemble
from grammars.postprocess import count_errors, finalize

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

ANSWERS = {
    "holes.py": ["sum(values) / len(values)",
                 "counts[word] = counts.get(word, 0) + 1\n        extra line that is dedented? no\n",
                 "t = s.replace(' ', '').lower()\n    return t == t[::-1]\n\n\ndef junk():\n    pass"],
    "holes.rs": ["values.iter().copied().max()", "k * k", "s.chars().eq(s.chars().rev())\n}\n\nfn junk() {}"],
    "holes.go": ["total := 0.0\n\tfor _, v := range values {\n\t\ttotal += v\n\t}\n\treturn total / float64(len(values))\n}",
                 "for i, j := 0, len(runes)-1; i < j; i, j = i+1, j-1 {\n\t\trunes[i], runes[j] = runes[j], runes[i]\n\t}"],
}


@pytest.mark.parametrize("name", sorted(ANSWERS))
def test_example_holes_fill_to_valid_code(name):
    doc = Document((EXAMPLES / name).read_text(encoding="utf-8"), path=name)
    holes = find_holes(doc)
    assert len(holes) == len(ANSWERS[name]) >= 2
    fills = [finalize(doc, h, raw) for h, raw in zip(holes, ANSWERS[name])]
    assert all(fills)
    out = Document(assemble(doc, holes, fills), path=name)
    assert count_errors(out.tree.root_node) == 0, out.text
    assert "junk" not in out.text
