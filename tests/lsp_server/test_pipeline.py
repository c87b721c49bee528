import asyncio
import dataclasses

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from grammars.document import Document
from grammars.planner import FillPlan, split_segments
from lsp_server.cache import FillCache
from lsp_server.core_link import CoreLink
from lsp_server.filling import (
    Filler,
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
async def filler():
    core = FakeCore(text="a + b", steps=2, step_s=0.005)
    link = CoreLink(lambda s, e: core, lambda k, m: None)
    await link.start(Settings())
    yield Filler(link, FillCache()), core
    await link.close()


async def test_at_cursor_plans_fills_and_caches(filler):
    f, core = filler
    doc = Document("def add(a, b):\n    return \n", language_id="python")
    out = await f.at_cursor("u", doc, 1, 11, "utf-16", Settings())
    assert out is not None and not out.cached and out.candidates
    best = out.candidates[0]
    assert "a + b" in best.text and best.start == doc.offset_at(1, 11)
    assert core.last_segments[0].endswith("return ") and core.last_budgets[0] <= Settings().fill.max_tokens
    # the same state again comes from the cache, without the core
    again = f.from_cache("u", doc, 1, 11, "utf-16")
    assert again is not None and again.cached and again.candidates[0].text == best.text
    assert core.fills == 1


async def test_at_cursor_nothing_to_do(filler):
    f, core = filler
    doc = Document("abc\n", language_id="python")
    assert await f.at_cursor("u", doc, 7, 0, "utf-16", Settings()) is None  # past the end
    assert await f.at_cursor("u", doc, 0, 1, "utf-16", Settings()) is None  # mid-identifier
    assert core.fills == 0


async def test_budget_capped_and_params_sent(filler):
    f, core = filler
    s = dataclasses.replace(Settings(), fill=dataclasses.replace(Settings().fill, max_tokens=3, steps=4))
    doc = Document("def f():\n    \n", language_id="python")
    await f.at_cursor("u", doc, 1, 4, "utf-16", s)
    assert core.last_budgets == [3] and core.last_params == {"steps": 4}


async def test_cancelling_the_request_cancels_the_core(filler):
    f, core = filler
    core.steps, core.step_s = 100, 0.01
    doc = Document("x = \n", language_id="python")
    task = asyncio.create_task(f.at_cursor("u", doc, 0, 4, "utf-16", Settings()))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert core.cancelled == 1 and core.completed == 0


async def test_holes_fill_jointly(filler):
    f, core = filler
    doc = Document("a = <|fill|>\nb = <|fill|>\n", language_id="python")
    from grammars.holes import find_holes

    plans = find_holes(doc)
    cands = await f.holes(doc, plans, Settings())
    assert len(cands) == 2 and core.fills == 1 and len(core.last_segments) == 3
    assert [c.start for c in cands] == [p.start_byte for p in plans]


async def test_model_sees_the_plan_leading_text(filler):
    f, core = filler
    doc = Document("def f():\n\nx = 1\n", language_id="python")
    out = await f.at_cursor("u", doc, 0, 8, "utf-16", Settings())
    assert core.last_segments[0] == "def f():\n    "  # the hole starts where the body goes
    assert out is not None and out.candidates[0].text.startswith("\n    ")
