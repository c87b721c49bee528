"""with_plan_context: the model sees the hole where finalize puts the fill."""
from grammars.document import Document
from grammars.planner import assemble, plan, split_segments, with_plan_context
from grammars.postprocess import finalize


def test_leading_text_ends_the_prefix_the_model_sees():
    doc = Document("def f(x):\n\nprint(f(1))\n", "python")
    p = plan(doc, 0, 9)  # the end of the opener line
    assert p is not None and p.leading.startswith("\n")
    segs = with_plan_context(split_segments(doc, [p]), [p])
    # The leading newline ends the prefix; the body's indentation is the model's to write
    # (fillplan.model_line_start): a prompt ending in whitespace made it answer nothing.
    assert p.leading == "\n    " and segs[0] == "def f(x):\n"
    assert segs[1] == p.trailing + split_segments(doc, [p])[1]
    fill = finalize(doc, p, "return x + 1")
    text = assemble(doc, [p], [fill])
    assert "def f(x):\n    return x + 1\n" in text
