"""The core server in-process on a fake engine, driven by raw frames and by CoreClient:
round trips, handshake, bad frames, tokens, busy, cancel, 8 concurrent clients, a
client that stops reading, and a dropped connection."""

from __future__ import annotations

import asyncio
import os
import stat

import pytest

from diffusion_core import protocol
from diffusion_core.serving.scheduler import SchedulerConfig
from diffusion_core.serving.service import CoreServer, ServiceConfig, main
from lsp_server.core_client import CoreClient, CoreRequestError, CoreUnavailable
from tests.service.service_fakes import FakeBackend, expected_texts

T = 10.0  # every wait in these tests is bounded


async def start_server(tmp_path, backend=None, tcp=False, **config):
    sched = config.pop("scheduler", SchedulerConfig())
    server = CoreServer(backend or FakeBackend(), ServiceConfig(scheduler=sched, **config))
    address = protocol.Address("tcp", host="127.0.0.1", port=0) if tcp else protocol.Address(
        "unix", path=str(tmp_path / "core.sock"))
    return server, await server.start(address)


OPEN: set = set()  # raw connections a test left open; closed after each test


@pytest.fixture(autouse=True)
async def close_raw_connections():
    yield
    for raw in list(OPEN):
        raw.close()
    await asyncio.sleep(0)


class Raw:
    """A bare protocol connection for tests that need to misbehave."""

    def __init__(self, reader, writer):
        self.reader, self.writer, self.next = reader, writer, 0
        OPEN.add(self)

    @classmethod
    async def open(cls, address: protocol.Address):
        if address.kind == "unix":
            return cls(*await asyncio.open_unix_connection(address.path))
        return cls(*await asyncio.open_connection(address.host, address.port))

    async def call(self, method, params=None, msg_id=None):
        self.next += 1
        self.writer.write(protocol.encode(protocol.request(msg_id or self.next, method, params)))
        await self.writer.drain()
        return await self.recv()

    async def recv(self):
        return await asyncio.wait_for(protocol.read_message(self.reader), T)

    async def hello(self, **extra):
        return await self.call("hello", {"version": protocol.PROTOCOL_VERSION, **extra})

    async def closed(self) -> bool:
        """True when the server closed this connection (EOF or reset); closes our end."""
        try:
            return await asyncio.wait_for(self.reader.read(1 << 20), T) == b""
        except ConnectionError:
            return True
        finally:
            self.close()

    def close(self):
        self.writer.close()
        OPEN.discard(self)


FILL = {"segments": ["def f(x):\n    ", "\n"], "budgets": [8], "params": {"steps": 2}}


async def test_round_trip_hello_fill_status_and_socket_mode(tmp_path):
    server, address = await start_server(tmp_path)
    try:
        assert stat.S_IMODE(os.stat(address.path).st_mode) == 0o600
        raw = await Raw.open(address)
        hello = await raw.hello(client="test")
        assert hello["result"]["version"] == protocol.PROTOCOL_VERSION
        assert hello["result"]["info"]["model"] == "fake"
        reply = await raw.call("fill", dict(FILL, request_id="req-1"))
        assert reply["id"] == 2
        assert reply["result"]["texts"] == expected_texts(FILL["segments"], FILL["budgets"])
        assert reply["result"]["stats"]["forward_passes"] == 2
        assert {"queue_ms", "core_ms", "batch"} <= set(reply["result"]["stats"])
        status = (await raw.call("status"))["result"]
        assert status["scheduler"]["counters"]["completed"] == 1
        assert status["connections"] == 1 and status["info"]["device"] == "cpu"
        assert status["model"] == "fake" and status["queue"] == 0
        assert status["latency_ms"]["window"] == 1 and status["latency_ms"]["p50"] >= 0
        raw.close()
    finally:
        await server.close()
    assert not os.path.exists(address.path)


async def test_request_errors_keep_the_connection(tmp_path):
    server, address = await start_server(tmp_path)
    try:
        raw = await Raw.open(address)
        await raw.hello()
        err = (await raw.call("explode"))["error"]
        assert err["code"] == protocol.E_UNKNOWN_METHOD
        err = (await raw.call("fill", {"segments": ["a"], "budgets": [4]}))["error"]
        assert err["code"] == protocol.E_BAD_REQUEST and "len(segments)" in err["message"]
        err = (await raw.call("fill", dict(FILL, params={"nope": 1})))["error"]
        assert err == {"code": protocol.E_INVALID_PARAMS, "message": "params.nope: unknown key"}
        raw.writer.write(protocol.encode({"method": "status"}))  # no id
        assert (await raw.recv())["error"]["code"] == protocol.E_BAD_REQUEST
        assert (await raw.call("cancel", {"id": 999}))["result"] == {"cancelled": False}
        assert "result" in await raw.call("status")  # still served
        raw.close()
    finally:
        await server.close()


async def test_handshake_is_required_and_versioned(tmp_path):
    server, address = await start_server(tmp_path)
    try:
        raw = await Raw.open(address)
        assert (await raw.call("status"))["error"]["code"] == protocol.E_HANDSHAKE
        assert await raw.closed()
        raw = await Raw.open(address)
        assert (await raw.call("hello", {"version": 99}))["error"]["code"] == protocol.E_VERSION
        assert await raw.closed()
    finally:
        await server.close()


@pytest.mark.parametrize("garbage", [
    b"\x00\x00\x00\x03\xc1\xc1\xc1",  # reserved msgpack byte
    b"\x00\x00\x00\x01\x93",  # truncated array
    b"\x00\x00\x00\x02\x91\x01",  # an array, not a map
    (protocol.MAX_FRAME_BYTES + 1).to_bytes(4, "big"),  # oversized: rejected from the header alone
])
async def test_malformed_or_oversized_frame_closes_only_that_connection(tmp_path, garbage):
    server, address = await start_server(tmp_path)
    try:
        good = await Raw.open(address)
        await good.hello()
        bad = await Raw.open(address)
        await bad.hello()
        bad.writer.write(garbage)
        reply = await bad.recv()
        assert reply["id"] is None and reply["error"]["code"] == protocol.E_BAD_FRAME
        assert await bad.closed()
        assert (await good.call("fill", FILL))["result"]["texts"]  # the other client is untouched
        good.close()
    finally:
        await server.close()


async def test_strangers_get_small_frames_and_little_time(tmp_path):
    server, address = await start_server(tmp_path, tcp=True, token="t", hello_timeout=0.2)
    try:
        raw = await Raw.open(address)
        raw.writer.write((protocol.MAX_HELLO_BYTES + 1).to_bytes(4, "big"))  # before hello
        assert (await raw.recv())["error"]["code"] == protocol.E_BAD_FRAME
        assert await raw.closed()
        idle = await Raw.open(address)  # connects and says nothing
        assert (await idle.recv())["error"]["code"] == protocol.E_HANDSHAKE
        assert await idle.closed()
    finally:
        await server.close()


async def test_tcp_token(tmp_path):
    server, address = await start_server(tmp_path, tcp=True, token="s3cret")
    try:
        for token in (None, "wrong", "s3cret-but-longer"):
            raw = await Raw.open(address)
            assert (await raw.hello(token=token))["error"]["code"] == protocol.E_UNAUTHORIZED
            assert await raw.closed()
        client = CoreClient(address=str(address), token="wrong")
        with pytest.raises(CoreUnavailable, match="unauthorized"):
            await client.start()
        client = CoreClient(address=str(address), token="s3cret")
        await client.start()
        assert (await client.fill(FILL["segments"], FILL["budgets"], {}))["texts"]
        await client.close()
    finally:
        await server.close()


def test_cli_refuses_non_loopback_without_token(monkeypatch, capsys):
    monkeypatch.delenv(protocol.TOKEN_ENV, raising=False)
    assert main(["--listen", "0.0.0.0:7777"]) == 2
    err = capsys.readouterr()
    assert err.out == ""
    assert "non-loopback" in err.err and err.err.count("\n") == 1
    assert main(["--listen", "nonsense"]) == 2
    assert main(["--socket", "/tmp/x.sock", "--token-file", "/nonexistent/token"]) == 2
    assert "/nonexistent/token" in capsys.readouterr().err


async def test_busy_when_the_queue_is_full(tmp_path):
    server, address = await start_server(
        tmp_path, FakeBackend(step_delay=0.01), scheduler=SchedulerConfig(max_queue=2, max_per_client=2))
    try:
        client = CoreClient(address=str(address))
        await client.start()
        slow = {"steps": 100000}
        tasks = [asyncio.create_task(client.fill(["a", "b"], [4], slow)) for _ in range(2)]
        await asyncio.sleep(0.05)
        with pytest.raises(CoreRequestError) as info:
            await client.fill(["a", "b"], [4], {})
        assert info.value.code == protocol.E_BUSY and "busy" in str(info.value)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.close()
    finally:
        await server.close()


async def test_cancelling_the_awaiting_task_cancels_in_the_core(tmp_path):
    backend = FakeBackend(step_delay=0.005)
    server, address = await start_server(tmp_path, backend)
    try:
        client = CoreClient(address=str(address))
        await client.start()
        task = asyncio.create_task(client.fill(["a", "b"], [4], {"steps": 100000}))
        while not backend.begun or backend.begun[0].steps_done < 2:
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(200):
            if server.scheduler.counters["cancelled"]:
                break
            await asyncio.sleep(0.01)
        assert server.scheduler.counters["cancelled"] == 1
        steps = backend.begun[0].steps_done
        await asyncio.sleep(0.05)
        assert backend.begun[0].steps_done == steps  # the engine stopped spending steps on it
        assert (await client.fill(["x", "y"], [2], {}))["texts"] == ["x#2"]
        await client.close()
    finally:
        await server.close()


async def test_eight_concurrent_clients_share_batches(tmp_path):
    backend = FakeBackend(step_delay=0.002)
    server, address = await start_server(tmp_path, backend)
    clients = [CoreClient(address=str(address)) for _ in range(8)]
    try:
        await asyncio.gather(*(c.start() for c in clients))

        async def editor(i, client):
            out = []
            for k in range(5):
                segments = [f"file{i}-edit{k}", f"tail{i}{k}", "end"]
                reply = await client.fill(segments, [i + 1, k + 1], {"steps": 3 + k}, request_id=f"{i}.{k}")
                assert reply["texts"] == expected_texts(segments, [i + 1, k + 1])
                out.append(reply["stats"]["batch"])
            return out

        batches = await asyncio.wait_for(asyncio.gather(*(editor(i, c) for i, c in enumerate(clients))), T)
        assert max(max(b) for b in batches) > 1  # concurrent requests shared forward passes
        assert max(backend.batches) > 1
        assert server.scheduler.counters["completed"] == 40
        status = await clients[0].status()
        assert status["connections"] == 8
    finally:
        await asyncio.gather(*(c.close() for c in clients))
        await server.close()


async def test_a_client_that_stops_reading_does_not_block_others(tmp_path):
    server, address = await start_server(tmp_path, write_queue=32)
    try:
        stuck = await Raw.open(address)
        await stuck.hello()
        # Thousands of requests, never reading a reply: the socket buffers fill, the
        # server's write queue for this connection hits its bound, the server drops it.
        flood = b"".join(protocol.encode(protocol.request(i, "status")) for i in range(20000))
        stuck.writer.write(flood)
        client = CoreClient(address=str(address))
        await client.start()
        for _ in range(3):
            reply = await asyncio.wait_for(client.fill(FILL["segments"], FILL["budgets"], {}), T)
            assert reply["texts"]
        for _ in range(500):
            if len(server.connections) == 1:
                break
            await asyncio.sleep(0.01)
        assert len(server.connections) == 1  # the stuck one was dropped, the good one stays
        await client.close()
        stuck.close()
    finally:
        await server.close()


async def test_dropped_connection_fails_in_flight_and_reconnects(tmp_path):
    events = []
    server, address = await start_server(tmp_path, FakeBackend(step_delay=0.005))
    try:
        client = CoreClient(address=str(address), on_event=lambda kind, msg: events.append((kind, msg)))
        await client.start()
        task = asyncio.create_task(client.fill(["a", "b"], [4], {"steps": 100000}))
        await asyncio.sleep(0.05)
        for conn in list(server.connections.values()):
            conn.abort()
        with pytest.raises(CoreUnavailable, match="connection lost"):
            await asyncio.wait_for(task, T)
        assert [k for k, _ in events] == ["died"]
        both = await asyncio.gather(client.fill(["x", "y"], [3], {}), client.fill(["z", "y"], [3], {}))
        assert [r["texts"] for r in both] == [["x#3"], ["z#3"]]  # reconnected once for both
        assert [k for k, _ in events] == ["died", "restarted"]
        assert len(server.connections) == 1
        await client.close()
        with pytest.raises(CoreUnavailable, match="closed"):
            await client.fill(["x", "y"], [3], {})
    finally:
        await server.close()


async def test_external_core_gone(tmp_path):
    client = CoreClient(address=f"unix:{tmp_path}/nobody.sock", connect_timeout=1.0)
    with pytest.raises(CoreUnavailable, match="cannot reach"):
        await client.start()
    with pytest.raises(CoreUnavailable):
        await client.fill(["a", "b"], [1], {})


async def test_shutdown_method_stops_the_server(tmp_path):
    server, address = await start_server(tmp_path, FakeBackend(step_delay=0.01))
    raw = await Raw.open(address)
    await raw.hello()
    waiter = asyncio.create_task(server.wait_closed())
    other = await Raw.open(address)
    await other.hello()
    other.writer.write(protocol.encode(protocol.request(7, "fill", dict(FILL, params={"steps": 100000}))))
    await asyncio.sleep(0.05)
    assert (await raw.call("shutdown"))["result"] == {"ok": True}
    await asyncio.wait_for(waiter, T)
    reply = await other.recv()  # the in-flight fill is answered, not left hanging
    assert reply["id"] == 7 and reply["error"]["code"] == protocol.E_SHUTTING_DOWN
    assert not os.path.exists(address.path)


def test_loopback_tcp_without_token_generates_one(tmp_path, monkeypatch):
    from diffusion_core.serving.service import build_parser, resolve_listen, write_token

    monkeypatch.delenv(protocol.TOKEN_ENV, raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    address, token, generated = resolve_listen(build_parser().parse_args(["--listen", "127.0.0.1:0"]))
    assert generated and len(token) >= 32 and address.kind == "tcp"
    path = write_token(protocol.Address("tcp", host="127.0.0.1", port=4321), token)
    with open(path) as f:
        assert f.read().strip() == token
    assert (os.stat(path).st_mode & 0o777) == 0o600
    monkeypatch.setenv(protocol.TOKEN_ENV, "from-env-0123456789")
    assert resolve_listen(build_parser().parse_args(["--listen", "0.0.0.0:1"]))[1:] == ("from-env-0123456789", False)
    token_file = tmp_path / "tok"
    token_file.write_text("from-file-0123456789\n")
    token_file.chmod(0o600)  # a token other users can read is refused (tests/hostile)
    args = build_parser().parse_args(["--socket", str(tmp_path / "s.sock"), "--token-file", str(token_file)])
    assert resolve_listen(args) == (protocol.Address("unix", path=str(tmp_path / "s.sock")), "from-file-0123456789",
                                    False)


async def test_out_of_memory_fails_that_request_and_the_core_stays_up(tmp_path):
    server, address = await start_server(tmp_path, FakeBackend(step_delay=0.002))
    client = CoreClient(address=str(address))
    try:
        await client.start()
        ok = [asyncio.create_task(client.fill([f"doc{i}", "end"], [3], {"steps": 5})) for i in range(3)]
        with pytest.raises(CoreRequestError) as info:
            await client.fill(["huge", "end"], [3], {"oom": True})
        assert info.value.code == protocol.E_OUT_OF_MEMORY and "out of memory" in info.value.message
        assert [r["texts"] for r in await asyncio.gather(*ok)] == [[f"doc{i}#3"] for i in range(3)]
        assert (await client.fill(["after", "end"], [2], {}))["texts"] == ["fter#2"]
        with pytest.raises(CoreRequestError) as info:  # bad input on the client side: one error, no crash
            await client.fill(["a", "b"], [2], {"seed": {1, 2}})
        assert info.value.code == protocol.E_BAD_REQUEST
        assert (await client.status())["queue"] == 0
    finally:
        await client.close()
        await server.close()
