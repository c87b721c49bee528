"""Strangers on the core's TCP port (issue 17 item 2): the hello deadline is total (it
does not restart with each frame), a stranger gets one answer, unauthenticated
connections are capped (oldest dropped first, so a client that says hello at once still
gets in while a flood is open), and wrong tokens are rate limited. Loopback only."""
from __future__ import annotations

import asyncio

from diffusion_core import protocol
from diffusion_core.serving.service import AuthLimiter
from lsp_server.core_client import CoreClient
from tests.service.service_fakes import FakeBackend
from tests.service.test_service_server import FILL, OPEN, Raw, close_raw_connections, start_server  # noqa: F401

T = 10.0


async def _eof(raw: Raw) -> bool:
    try:
        while True:
            chunk = await asyncio.wait_for(raw.reader.read(1 << 16), T)
            if not chunk:
                return True
    except ConnectionError:
        return True


async def test_frames_before_hello_do_not_extend_the_deadline(tmp_path):
    server, address = await start_server(tmp_path, tcp=True, token="t", hello_timeout=1.0)
    try:
        raw = await Raw.open(address)

        async def trickle():  # a frame every 0.1 s, as the attack sent one every 5 s
            with_errors = 0
            for i in range(40):
                try:
                    raw.writer.write(protocol.encode(protocol.request(i + 1, "nope", {})))
                    await raw.writer.drain()
                except (ConnectionError, OSError):
                    return with_errors
                await asyncio.sleep(0.1)
            return with_errors

        task = asyncio.create_task(trickle())
        assert await _eof(raw)  # closed, not answered frame after frame for 4 s
        await task
    finally:
        await server.close()


async def test_idle_flood_is_capped_and_a_client_still_gets_in(tmp_path):
    server, address = await start_server(tmp_path, FakeBackend(), tcp=True, token="s3cret", max_unauthenticated=8)
    try:
        flood = [await Raw.open(address) for _ in range(60)]
        await asyncio.sleep(0.2)
        assert len(server.unauthenticated) <= 8
        assert len(server.connections) <= 8
        client = CoreClient(address=str(address), token="s3cret")
        await client.start()
        assert (await client.fill(FILL["segments"], FILL["budgets"], {}))["texts"]
        await client.close()
        for raw in flood:
            raw.close()
    finally:
        await server.close()


async def test_wrong_tokens_are_rate_limited(tmp_path):
    server, address = await start_server(tmp_path, tcp=True, token="s3cret", auth_fail_burst=3, auth_fail_rate=0.01)
    try:
        messages = []
        for _ in range(6):
            raw = await Raw.open(address)
            messages.append((await raw.hello(token="guess"))["error"]["message"])
            raw.close()
        assert messages[:3] == ["wrong or missing token"] * 3
        assert all("too many failed handshakes" in m for m in messages[3:])
        raw = await Raw.open(address)  # while the bucket is empty no token is even compared
        assert "too many" in (await raw.hello(token="s3cret"))["error"]["message"]
        raw.close()
    finally:
        await server.close()


def test_auth_limiter_refills():
    now = [0.0]
    limiter = AuthLimiter(burst=2, rate=1.0, clock=lambda: now[0])
    limiter.spend(), limiter.spend()
    assert not limiter.allow()
    now[0] = 1.5
    assert limiter.allow()
