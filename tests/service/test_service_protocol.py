"""Wire format: round trips, incremental decoding at any split, and fuzzed frames
(the decoder and the live server answer garbage with ProtocolError / an error reply,
never a crash or a hang)."""

from __future__ import annotations

import asyncio
import os

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diffusion_core import protocol
from diffusion_core.serving.service import CoreServer, ServiceConfig
from tests.service.frame_decoder import FrameDecoder
from tests.service.service_fakes import FakeBackend

scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text() | st.binary()
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
                      max_leaves=20)
messages = st.dictionaries(st.text(max_size=10), values, max_size=6)


FAST = settings(max_examples=60, deadline=None)


@FAST
@given(st.lists(messages, min_size=1, max_size=5), st.data())
def test_round_trip_at_any_split(msgs, data):
    stream = b"".join(protocol.encode(m) for m in msgs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    decoder = FrameDecoder()
    out, last = [], 0
    for cut in cuts + [len(stream)]:
        out += decoder.feed(stream[last:cut])
        last = cut
    assert out == msgs


@given(st.binary(max_size=200))
def test_garbage_bytes_give_protocol_error_or_messages(blob):
    decoder = FrameDecoder(max_bytes=1 << 16)
    try:
        out = decoder.feed(blob)
    except protocol.ProtocolError as exc:
        assert exc.code == protocol.E_BAD_FRAME
    else:
        assert all(isinstance(m, dict) for m in out)


@given(st.binary(max_size=100))
def test_garbage_bodies(blob):
    try:
        assert isinstance(protocol.decode_body(blob), dict)
    except protocol.ProtocolError as exc:
        assert exc.code == protocol.E_BAD_FRAME


@FAST
@given(messages)
def test_parse_request_never_crashes(msg):
    try:
        req = protocol.parse_request(msg)
    except protocol.ProtocolError as exc:
        assert exc.code in (protocol.E_BAD_REQUEST, protocol.E_UNKNOWN_METHOD)
    else:
        assert req.method in protocol.METHODS and isinstance(req.params, dict)


@FAST
@given(st.dictionaries(st.sampled_from(["segments", "budgets", "params", "request_id", "progress"]), values))
def test_parse_fill_never_crashes(params):
    for parse in (protocol.parse_fill, protocol.parse_warm):
        try:
            fill = parse(params)
        except protocol.ProtocolError as exc:
            assert exc.code == protocol.E_BAD_REQUEST
        else:
            assert len(fill.segments) == len(fill.budgets) + 1 and isinstance(fill.progress, bool)
            assert parse is protocol.parse_fill or len(fill.budgets) == 1


def test_progress_and_warm_shapes_are_one_line_errors():
    ok = {"segments": ["a", "b"], "budgets": [3]}
    assert protocol.parse_fill({**ok, "progress": True}).progress is True
    assert protocol.parse_fill(ok).progress is False
    with pytest.raises(protocol.ProtocolError, match="'progress' must be a bool"):
        protocol.parse_fill({**ok, "progress": 1})
    with pytest.raises(protocol.ProtocolError, match="warm takes one hole"):
        protocol.parse_warm({"segments": ["a", "b", "c"], "budgets": [1, 2]})
    assert protocol.WARM in protocol.METHODS and protocol.HEARTBEAT_S > 0


def test_limits_and_envelopes():
    with pytest.raises(protocol.ProtocolError, match="exceeds the limit"):
        protocol.encode({"x": "a" * 100}, max_bytes=50)
    with pytest.raises(protocol.ProtocolError, match="exceeds the limit"):
        FrameDecoder(max_bytes=10).feed((11).to_bytes(4, "big"))
    frame = protocol.encode(protocol.request(1, "fill", {"segments": ["a", "b"], "budgets": [3]}))
    assert int.from_bytes(frame[:4], "big") == len(frame) - 4
    assert msgpack.unpackb(frame[4:]) == {"id": 1, "method": "fill",
                                          "params": {"segments": ["a", "b"], "budgets": [3]}}
    assert protocol.error(3, protocol.E_BUSY, "full") == {"id": 3, "error": {"code": "busy", "message": "full"}}
    with pytest.raises(protocol.ProtocolError):
        protocol.decode_body(msgpack.packb({1: 2}))  # non-string keys
    with pytest.raises(protocol.ProtocolError, match="not msgpack-serializable") as info:
        protocol.encode({"params": {1, 2}})
    assert info.value.code == protocol.E_BAD_REQUEST


@pytest.mark.parametrize("text, expected", [
    ("unix:/run/x.sock", protocol.Address("unix", path="/run/x.sock")),
    ("tcp:127.0.0.1:7000", protocol.Address("tcp", host="127.0.0.1", port=7000)),
    ("tcp:[::1]:7000", protocol.Address("tcp", host="::1", port=7000)),
])
def test_addresses(text, expected):
    assert protocol.parse_address(text) == expected


@pytest.mark.parametrize("bad", ["", "unix:", "tcp:host", "tcp:host:99999", "http://x"])
def test_bad_addresses(bad):
    with pytest.raises(ValueError):
        protocol.parse_address(bad)


def test_loopback():
    assert protocol.is_loopback("127.0.0.1") and protocol.is_loopback("::1") and protocol.is_loopback("localhost")
    assert not protocol.is_loopback("0.0.0.0") and not protocol.is_loopback("example.com")


def test_runtime_dir_is_private(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    path = protocol.runtime_dir()
    assert path == str(tmp_path / "diffill") and (os.stat(path).st_mode & 0o777) == 0o700
    os.chmod(path, 0o755)
    with pytest.raises(ValueError, match="not private"):
        protocol.runtime_dir()


# A live server fed fuzzed frames: it answers with an error or closes that connection,
# and a well-behaved client on the same server is served afterwards.
fuzz_frames = st.one_of(
    st.binary(max_size=64),
    messages.map(protocol.encode),
    st.builds(lambda m, method: protocol.encode({**m, "id": 1, "method": method}), messages,
              st.sampled_from(list(protocol.METHODS) + ["nope"])),
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(fuzz_frames, min_size=1, max_size=4))
def test_server_survives_fuzzed_frames(tmp_path, frames):
    asyncio.run(asyncio.wait_for(_fuzz_once(str(tmp_path / "fuzz.sock"), frames), 20))


async def _fuzz_once(path: str, frames: list[bytes]) -> None:
    server = CoreServer(FakeBackend(), ServiceConfig())
    await server.start(protocol.Address("unix", path=path))
    try:
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(protocol.encode(protocol.request(0, "hello", {"version": protocol.PROTOCOL_VERSION})))
        writer.write(b"".join(frames))
        writer.write_eof()
        while True:  # read every reply until the server closes: bounded by wait_for above
            try:
                message = await protocol.read_message(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            if message is None:
                break
            assert "result" in message or message["error"]["code"] in {
                protocol.E_BAD_FRAME, protocol.E_BAD_REQUEST, protocol.E_UNKNOWN_METHOD, protocol.E_INVALID_PARAMS,
                protocol.E_CANCELLED, protocol.E_SHUTTING_DOWN, protocol.E_HANDSHAKE, protocol.E_VERSION,
                protocol.E_BUSY}
        writer.close()
        good_reader, good_writer = await asyncio.open_unix_connection(path)
        good_writer.write(protocol.encode(protocol.request(1, "hello", {"version": protocol.PROTOCOL_VERSION})))
        good_writer.write(protocol.encode(protocol.request(2, "status")))
        assert "result" in await protocol.read_message(good_reader)
        assert "result" in await protocol.read_message(good_reader)
        good_writer.close()
    finally:
        await server.close()
