"""The sample files with holes (examples/): each has holes, and good fills make them valid."""

from __future__ import annotations

from pathlib import Path

import pytest

from grammars.document import Document
from grammars.holes import find_holes
from grammars.planner import assemble
from grammars.postprocess import count_errors, finalize
from evaluation.bench_examples import FILES, check

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

ANSWERS = {
    "holes.py": ["sum(values) / len(values)",
                 "counts[word] = counts.get(word, 0) + 1\n        extra line that is dedented? no\n",
                 "t = s.replace(' ', '').lower()\n    return t == t[::-1]\n\n\ndef junk():\n    pass"],
    "holes.rs": ["values.iter().copied().max()", "k * k", "s.chars().eq(s.chars().rev())\n}\n\nfn junk() {}"],
    "holes.go": ["total := 0.0\n\tfor _, v := range values {\n\t\ttotal += v\n\t}\n\treturn total / float64(len(values))\n}",
                 "for i, j := 0, len(runes)-1; i < j; i, j = i+1, j-1 {\n\t\trunes[i], runes[j] = runes[j], runes[i]\n\t}"],
    # As the default model writes them: a block hole's line with its own indentation
    # (fillplan.model_line_start), running on past the hole's scope into the suffix's code.
    "holes.c": ["        total += values[i];",
                "        if (*s == ' ') {\n            in_word = 0;\n        } else if (!in_word) {\n            in_word = 1;\n"
                "            words++;\n        }\n    }\n    return words;\n}",
                "\n    int best = values[0];\n    for (int i = 1; i < n; i++) {\n        if (values[i] > best) {\n"
                "            best = values[i];\n        }\n    }\n    return best;\n}\n\nint junk(void) { return 0; }"],
    "holes.js": ["values.reduce((a, b) => a + b, 0) / values.length",
                 "    counts[word] = (counts[word] || 0) + 1;\n  }\n  return counts;",
                 "return s === s.split('').reverse().join('');\n}\n\nfunction junk() {}"],
    "holes.ts": ["values.reduce((a, b) => a + b, 0) / values.length",
                 "    counts.set(word, (counts.get(word) ?? 0) + 1);",
                 "return s === s.split(\"\").reverse().join(\"\");\n}\n\nfunction junk(): void {}"],
}


@pytest.mark.parametrize("name", sorted(ANSWERS))
def test_example_holes_fill_to_valid_code(name):
    doc = Document((EXAMPLES / name).read_text(encoding="utf-8"), path=name)
    holes = find_holes(doc)
    assert len(holes) == len(ANSWERS[name]) >= 2
    # The editor's tab settings for the hole's indentation, as the pipeline passes them (tabs in Go).
    fills = [finalize(doc, h, raw, insert_spaces="\t" not in h.indent) for h, raw in zip(holes, ANSWERS[name])]
    assert all(fills)
    out = Document(assemble(doc, holes, fills), path=name)
    assert count_errors(out.tree.root_node) == 0, out.text
    assert "junk" not in out.text
    verdict = check(name, out.text)  # the compiler where one is installed, and the indentation
    assert verdict["compiles"] and not verdict["indent_errors"], (verdict, out.text)


def test_every_sample_file_has_answers():
    assert sorted(p.name for p in EXAMPLES.glob("holes.*")) == sorted(ANSWERS) == sorted(FILES)
