import asyncio
import dataclasses

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from grammars.document import Document
from grammars.planner import FillPlan, split_segments
from lsp_server import pipeline
from lsp_server.pipeline import (
    clip_segments,
    prefix_window_start,
    suffix_window_end,
    variants,
    window_segments,
)
from lsp_server.settings import ContextSettings, Settings
from tests.lsp_server.fakes import FakeCore

HUGE = Settings(context=ContextSettings(prefix_bytes=1_000_000, suffix_bytes=1_000_000))


def _plan(start, end):
    return FillPlan(start, end, "insert" if start == end else "replace", "line", 16, "")


@hsettings(max_examples=200, deadline=None)
@given(text=st.text(max_size=80), a=st.integers(0, 400), b=st.integers(0, 400))
def test_window_segments_equal_split_segments_without_a_cut(text, a, b):
    doc = Document(text, language_id="plaintext")
    src = doc.source
    # plan offsets on character boundaries, as the planner gives them
    bounds = [i for i in range(len(src) + 1) if i == len(src) or (src[i] & 0xC0) != 0x80]
    s, e = sorted((bounds[a % len(bounds)], bounds[b % len(bounds)]))
    p = _plan(s, e)
    assert window_segments(src, s, e, HUGE) == split_segments(doc, [p]) or "\udc80" in text or any(
        0xD800 <= ord(c) <= 0xDFFF for c in text
    )


@hsettings(max_examples=200, deadline=None)
@given(lines=st.lists(st.text(alphabet="abé\t 😀", max_size=30), max_size=60), pos=st.integers(0, 5000),
       limit=st.integers(64, 400))
def test_windows_are_bounded_on_boundaries_and_stable(lines, pos, limit):
    src = "\n".join(lines).encode()
    start = min(pos, len(src))
    while start < len(src) and (src[start] & 0xC0) == 0x80:
        start += 1
    lo = prefix_window_start(src, start, limit)
    assert 0 <= lo <= start and start - lo <= limit
    assert lo == 0 or src[lo - 1 : lo] == b"\n" or (src[lo] & 0xC0) != 0x80
    src[lo:start].decode()  # whole characters
    hi = suffix_window_end(src, start, limit)
    assert start <= hi <= len(src) and hi - start <= limit
    src[start:hi].decode()
    # typing at the hole does not move the window start while inside one grid cell
    grown = src[:start] + b"x" + src[start:]
    lo2 = prefix_window_start(grown, start + 1, limit)
    assert lo2 == lo or start + 1 - lo > limit or lo2 > lo


def test_clip_segments_cuts_outer_segments_only():
    segs = ["a\n" * 5000, "middle\n" * 3000, "z\n" * 5000]
    out = clip_segments(segs, Settings())
    assert out[1] == segs[1]
    assert len(out[0]) <= 6000 and out[0].endswith("a\n") and segs[0].endswith(out[0])
    assert len(out[2]) <= 2000 and segs[2].startswith(out[2])


def test_variants():
    assert variants("a\nb") == ["a\nb", "a"]
    assert variants("one") == ["one"]
    assert variants("\nb") == ["\nb"]


@pytest.fixture
def core():
    return FakeCore(text="a + b", steps=2, step_s=0.005)


async def test_fill_at_plans_fills_and_ranks(core):
    doc = Document("def add(a, b):\n    return \n", language_id="python")
    out = await pipeline.fill_at(core, doc, doc.offset_at(1, 11), Settings())
    assert out is not None and not out.cached and out.candidates
    best = out.candidates[0]
    assert "a + b" in best.text and best.start == doc.offset_at(1, 11) and out.plan.start_byte == best.start
    assert core.last_segments[0].endswith("return ") and core.last_budgets[0] <= Settings().fill.max_tokens
    assert core.fills == 1


async def test_fill_at_nothing_to_do(core):
    doc = Document("abc\n", language_id="python")
    assert await pipeline.fill_at(core, doc, 99, Settings()) is None  # past the end
    assert await pipeline.fill_at(core, doc, 1, Settings()) is None  # mid-identifier
    assert core.fills == 0


async def test_the_marker_setting_reaches_the_planner(core):
    doc = Document("x = 1\ny = ??\n", language_id="python")
    marked = dataclasses.replace(Settings(), hole_marker="??")
    out = await pipeline.fill_at(core, doc, doc.offset_at(1, 5), marked)
    assert out is not None and out.plan.target == "hole" and out.plan.mode == "replace"
    assert core.last_segments == ["x = 1\ny = ", "\n"]  # the marker itself is not context


async def test_stop_rules_travel_with_the_request(core):
    doc = Document("def f(x):\n    y = \n    return y\n", language_id="python")
    await pipeline.fill_at(core, doc, doc.offset_at(1, 8), Settings())
    # a line hole ends at its newline, or before a bracket closing what it did not open
    assert core.last_stops == [{"max_lines": 1, "dedent_below": -1, "min_depth": 0}]
    body = Document("def f(x):\n    \n", language_id="python")
    out = await pipeline.fill_at(core, body, body.offset_at(1, 4), Settings())
    assert out.plan.kind == "block" and core.last_stops == [{"max_lines": 0, "dedent_below": 4, "min_depth": 0}]
    holes = Document("a = <|fill|>\nb = <|fill|>\n", language_id="python")
    from grammars.holes import find_holes

    await pipeline.fill_plans(core, holes, find_holes(holes), Settings())
    assert core.last_stops == [{"max_lines": 1, "dedent_below": -1, "min_depth": 0}] * 2
    braces = Document("int f(int a) {\n  \n}\n", language_id="c")
    out = await pipeline.fill_at(core, braces, braces.offset_at(1, 2), Settings())
    assert core.last_stops[0]["min_depth"] == 0  # a C body may not close the function's brace


async def test_budget_capped_and_params_sent(core):
    s = dataclasses.replace(Settings(), fill=dataclasses.replace(Settings().fill, max_tokens=3, steps=4))
    doc = Document("def f():\n    \n", language_id="python")
    await pipeline.fill_at(core, doc, doc.offset_at(1, 4), s)
    assert core.last_budgets == [3] and core.last_params == {"steps": 4}


async def test_cancelling_the_request_cancels_the_core(core):
    core.steps, core.step_s = 100, 0.01
    doc = Document("x = \n", language_id="python")
    task = asyncio.create_task(pipeline.fill_at(core, doc, 4, Settings()))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert core.cancelled == 1 and core.completed == 0


async def test_holes_fill_jointly_and_apply(core):
    doc = Document("a = <|fill|>\nb = <|fill|>\n", language_id="python")
    from grammars.holes import find_holes

    plans = find_holes(doc)
    cands = await pipeline.fill_plans(core, doc, plans, Settings())
    assert len(cands) == 2 and core.fills == 1 and len(core.last_segments) == 3
    assert [c.start for c in cands] == [p.start_byte for p in plans]
    assert pipeline.apply(doc, plans, cands) == "a = a + b\nb = a + b\n"


async def test_model_sees_the_plan_leading_text(core):
    doc = Document("def f():\n\nx = 1\n", language_id="python")
    out = await pipeline.fill_at(core, doc, 8, Settings())
    assert core.last_segments[0] == "def f():\n"  # the hole starts the body's line; the model indents it
    assert out is not None and out.candidates[0].text.startswith("\n    ")
