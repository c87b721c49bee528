"""The three callers of the fill pipeline give the same text for the same document,
cursor and model: the language server (``DiffillServer.complete``), ``diffill fill --at``
(``diffill.fill.fill_document``) and ``diffill bench quality`` (``shipped_fill``).

Each runs in this process on one in-process core (``LocalCore``), first over a
deterministic fake engine whose answer depends on what it was sent (so a caller that
built its segments, budgets or params differently would get a different text), then
over a tiny random model.
"""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from diffill.fill import fill_document
from diffusion_core.generation.engine import FillResult, FillStats
from diffusion_core.serving.local_core import LocalCore
from evaluation.bench_quality import shipped_fill
from evaluation.heldout import Hole
from grammars.document import Document
from lsp_server import pipeline
from lsp_server.runtime import DiffillServer
from lsp_server.settings import Settings

CASES = [  # (text, line, character): a line, a block after an opener, a marker
    ("def add(a, b):\n    return \n\n\nprint(add(1, 2))\n", 1, 11),
    ("class A:\n    def f(self):\n\n    x = 1\n", 1, 16),
    ("values = [1, 2, 3]\ntotal = <|fill|>\nprint(total)\n", 1, 10),
]


class EchoEngine:
    """Answers with a text derived from the segments, budgets and params it got."""

    def __init__(self) -> None:
        self.requests: list[tuple] = []

    def fill(self, segments, holes, params=None, on_step=None):
        key = repr((segments, [h.budget for h in holes], params.as_dict() if params else None))
        self.requests.append(key)
        digest = hashlib.sha256(key.encode()).hexdigest()[:6]
        return FillResult([f"sum([a, b])  # {digest}\n    pass" for _ in holes], FillStats(forward_passes=1))

    def info(self) -> dict:
        return {"model": "echo"}


async def _three(engine, text: str, line: int, character: int, tmp_path) -> list[str]:
    settings = Settings()
    core = LocalCore(engine)
    # 1. the language server, in process, on the same core
    ls = DiffillServer(core_factory=lambda s, on_event: core)
    ls.feedback.path = tmp_path / "feedback.jsonl"
    await ls.link.start(ls.settings)
    ls.docs.open("file:///t/a.py", "python", 1, text)
    answer = await ls.complete("file:///t/a.py", line, character, debounce=False)
    entry = ls.docs.get("file:///t/a.py")
    lsp = (pipeline.apply(entry.doc, [answer.outcome.plan], answer.outcome.candidates[:1])
           if answer is not None else text)
    # 2. `diffill fill --at` (utf-32 columns, the same here: ASCII)
    doc = Document(text, path="a.py")
    cli, _, _ = await fill_document(doc, (line, character), core, settings)
    # 3. `diffill bench quality`: a held-out hole at that cursor
    doc = Document(text, path="a.py")
    plan = pipeline.plan_at(doc, doc.offset_at(line, character), marker=settings.hole_marker)
    filled, _ = await shipped_fill(core, Hole("x", "a.py", "python", doc, plan, "", character), settings)
    bench = pipeline.apply(doc, [plan], [pipeline.Candidate(filled, plan.start_byte, plan.end_byte)])
    await ls.link.close()
    return [lsp, cli, bench]


@pytest.mark.parametrize("text,line,character", CASES)
async def test_three_callers_same_text_fake_engine(text, line, character, tmp_path):
    engine = EchoEngine()
    lsp, cli, bench = await _three(engine, text, line, character, tmp_path)
    assert lsp == cli == bench
    assert lsp != text and "sum([a, b])" in lsp  # something was filled
    assert len(set(engine.requests)) == 1 and len(engine.requests) == 3  # the same request three times


async def test_three_callers_same_text_tiny_model(tmp_path):
    from diffusion_core.generation.engine import Engine
    from evaluation.tiny_model import make_tiny_model

    engine = Engine.load(make_tiny_model(tmp_path / "model", seed=5), device="cpu")
    for text, line, character in CASES:
        lsp, cli, bench = await _three(engine, text, line, character, tmp_path)
        assert lsp == cli == bench, (text, lsp, cli, bench)
