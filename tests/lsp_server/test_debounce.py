import asyncio

import pytest

from lsp_server.debounce import Debouncer, Latest


async def test_newest_wins_cancels_previous_task():
    latest = Latest()
    started = asyncio.Event()

    async def request(n):
        latest.claim("doc")
        started.set()
        try:
            await asyncio.sleep(10)
        finally:
            latest.release("doc")
        return n

    first = asyncio.create_task(request(1))
    await started.wait()
    second = asyncio.create_task(asyncio.sleep(0, result=2))
    third = asyncio.create_task(request(3))
    await asyncio.sleep(0.01)
    assert first.cancelled()
    assert not third.done()
    assert latest.superseded == 1 and latest.in_flight() == 1
    third.cancel()
    with pytest.raises(asyncio.CancelledError):
        await third
    assert await second == 2


async def test_other_documents_are_untouched():
    latest = Latest()

    async def request(key):
        latest.claim(key)
        await asyncio.sleep(0.05)
        latest.release(key)
        return key

    a = asyncio.create_task(request("a"))
    b = asyncio.create_task(request("b"))
    assert await a == "a" and await b == "b"
    assert latest.superseded == 0 and latest.in_flight() == 0


def test_debounce_follows_rhythm_within_bounds():
    d = Debouncer()
    assert d.delay_s("x", 0, 120) == 0.0  # no rhythm yet: no wait
    t = 100.0
    for _ in range(10):
        d.observe("x", t)
        t += 0.05  # typing every 50 ms
    assert 0.05 < d.delay_s("x", 0, 120) <= 0.07  # a bit longer than the 50 ms rhythm
    assert d.delay_s("x", 0, 20) == 0.02  # capped
    assert d.delay_s("x", 80, 120) == 0.08  # floored
    d.observe("x", t + 5.0)  # a pause is not rhythm
    assert 0.05 < d.delay_s("x", 0, 120) <= 0.07
    d.forget("x")
    assert d.delay_s("x", 0, 120) == 0.0


def test_percentile_nearest_rank_against_sorted_reference():
    import random

    from lsp_server.feedback import percentile

    rng = random.Random(0)
    assert percentile([], 50) is None
    for n in range(1, 60):
        values = [rng.random() for _ in range(n)]
        ordered = sorted(values)
        for q in (0, 50, 95, 100):
            k = max(1, -(-q * n // 100))  # ceil(q/100 * n), at least 1
            assert percentile(values, q) == ordered[k - 1]
