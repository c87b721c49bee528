"""One place for each thing: the hole marker, the budget cap, the percentile convention."""

from __future__ import annotations

from diffusion_core import protocol
from diffusion_core.generation import params
from grammars import budgets
from grammars.document import Document
from grammars.holes import DEFAULT_MARKER
from grammars.planner import plan
from lsp_server import settings as settings_mod
from lsp_server.settings import Settings


def test_the_marker_setting_defaults_to_the_planner_marker_and_reaches_it():
    assert Settings().hole_marker == DEFAULT_MARKER
    doc = Document("a = 1\nb = @@\n", language_id="python")
    assert plan(doc, 1, 5).target != "hole"  # not a marker by default
    p = plan(doc, 1, 5, marker="@@")
    assert p.target == "hole" and doc.source[p.start_byte:p.end_byte] == b"@@"


def test_one_budget_cap():
    assert params.MAX_BUDGET == protocol.MAX_HOLE_TOKENS
    assert budgets.MAX_PLAN_BUDGET <= protocol.MAX_HOLE_TOKENS  # the planner never asks for more
    ok, bad = settings_mod.parse({"fill": {"maxTokens": protocol.MAX_HOLE_TOKENS}})
    assert not bad and ok.fill.max_tokens == protocol.MAX_HOLE_TOKENS
    over, bad = settings_mod.parse({"fill": {"maxTokens": protocol.MAX_HOLE_TOKENS + 1}})
    assert bad and over.fill.max_tokens == Settings().fill.max_tokens


def test_percentile_is_nearest_rank():
    assert protocol.percentile([], 50) is None
    assert protocol.percentile([5.0], 95) == 5.0
    values = [float(v) for v in range(1, 101)]
    assert protocol.percentile(values, 50) == 50.0 and protocol.percentile(values, 95) == 95.0
    assert protocol.percentile([3.0, 1.0, 2.0], 50) == 2.0  # a measured value, never interpolated
    assert protocol.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0


def test_one_line():
    assert protocol.one_line(ValueError("first\nsecond")) == "first"
    assert protocol.one_line(KeyError()) == "KeyError"
    assert len(protocol.one_line(ValueError("x" * 9000))) == 500

