"""Token holders stalling inside large frames (issue 17 item 10): 4 authenticated TCP
connections each holding a 15 MiB partial frame grew the core by 65 MB. The core now
counts unfinished frame bytes over all connections (service.MAX_PARTIAL_FRAME_BYTES);
past the total the connection holding the most is answered bad_frame and closed, so a
client sending an ordinary frame still gets in. Loopback only."""
from __future__ import annotations

import asyncio
import struct

from diffusion_core import protocol
from diffusion_core.serving.service import MAX_PARTIAL_FRAME_BYTES
from lsp_server.core_client import CoreClient
from tests.service.service_fakes import FakeBackend
from tests.service.test_service_server import FILL, OPEN, Raw, close_raw_connections, start_server  # noqa: F401

T = 10.0
MIB = 1024 * 1024
TOKEN = "s3cret"


async def _stall_inside_a_frame(address, length: int, sent: int) -> Raw:
    """An authenticated connection that announces a frame of `length` bytes and sends `sent`."""
    raw = await Raw.open(address)
    assert "result" in await raw.hello(token=TOKEN)
    raw.writer.write(struct.pack(">I", length) + b"\x00" * sent)
    await raw.writer.drain()
    return raw


async def _until(predicate, timeout: float = T) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        assert loop.time() < end, "condition not reached in time"
        await asyncio.sleep(0.01)


def _held(server) -> int:
    return sum(len(c.partial) for c in server.connections.values())


async def test_four_stalled_15_mib_frames_are_capped_and_the_hogs_closed(tmp_path):
    server, address = await start_server(tmp_path, FakeBackend(), tcp=True, token=TOKEN)
    limit = server.config.max_partial_bytes
    assert limit == MAX_PARTIAL_FRAME_BYTES
    length, sent = 15 * MIB, 15 * MIB - 1  # one byte short: the frame never completes
    try:
        raws = []
        for _ in range(4):  # the attack of issue 17, one connection after the other
            raws.append(await _stall_inside_a_frame(address, length, sent))
            # the core has read what it will: this connection's bytes, or its budget ran out
            await _until(lambda: server.partial_bytes >= min(len(raws) * sent, limit - sent))
            assert server.partial_bytes <= limit
        await _until(lambda: _held(server) <= 2 * sent)
        assert server.partial_bytes == _held(server) <= limit
        # The two that held the most when the total ran over are told why and closed.
        for raw in raws[:2]:
            err = await raw.recv()
            assert err["error"]["code"] == protocol.E_BAD_FRAME
            assert str(limit) in err["error"]["message"] and "unfinished" in err["error"]["message"]
            assert await raw.closed()
        # A legitimate client still fills while the last two hold their 30 MiB.
        client = CoreClient(address=str(address), token=TOKEN)
        await client.start()
        assert (await client.fill(FILL["segments"], FILL["budgets"], {}))["texts"]
        await client.close()
        for raw in raws[2:]:
            raw.close()
        await _until(lambda: server.partial_bytes == 0)
    finally:
        await server.close()


async def test_a_small_frame_gets_in_while_a_hog_holds_the_budget(tmp_path):
    server, address = await start_server(tmp_path, FakeBackend(), tcp=True, token=TOKEN, max_partial_bytes=MIB)
    try:
        hog = await _stall_inside_a_frame(address, 2 * MIB, MIB - 16)
        await _until(lambda: server.partial_bytes == MIB - 16)
        raw = await Raw.open(address)  # hello and fill frames are larger than the 16 bytes left
        assert "result" in await raw.hello(token=TOKEN)
        assert (await raw.call("fill", FILL))["result"]["texts"]
        assert (await hog.recv())["error"]["code"] == protocol.E_BAD_FRAME
        assert await hog.closed()
        raw.close()
    finally:
        await server.close()


async def test_a_frame_larger_than_the_budget_closes_its_own_connection(tmp_path):
    server, address = await start_server(tmp_path, FakeBackend(), tcp=True, token=TOKEN, max_partial_bytes=MIB)
    try:
        raw = await _stall_inside_a_frame(address, 2 * MIB, 2 * MIB - 1)
        err = await raw.recv()
        assert err["error"]["code"] == protocol.E_BAD_FRAME and str(MIB) in err["error"]["message"]
        assert await raw.closed()
        await _until(lambda: server.partial_bytes == 0)
    finally:
        await server.close()
