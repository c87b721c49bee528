"""Hostile LSP input (issue 17 items 4, 5, 7, 8): every registered request method, fired
with invalid params, gets a result or an error reply; malformed JSON gets -32700; broken
framing (huge, lying, lowercase, negative, LF-only Content-Length, a 50 MB header line)
leaves the server alive and answering; selectedCompletionInfo edge cases and a
malformed fillHoles range answer empty instead of failing or widening to the whole file."""
from __future__ import annotations

import json

import pytest
from lsprotocol import types

from lsp_server.guards import FrameParser
from lsp_server.server import build_server
from tests.hostile.raw_lsp import RawLsp, frame

BAD_PARAMS = [
    "omit", None, 42, "x", [], {},
    {"textDocument": 5, "position": {"line": -1, "character": 2**40}},
    {"textDocument": {"uri": "file:///h.py"}, "position": {"line": 2147483648, "character": 0},
     "context": {"triggerKind": 99}},
    {"textDocument": {"uri": "file:///h.py"}, "position": {"line": 0, "character": 0},
     "range": {"start": {"line": 9, "character": 0}, "end": {"line": 0, "character": -3}},
     "context": {"triggerKind": 1, "diagnostics": "no"}, "command": 7, "arguments": "no"},
]
NEVER_SEND = {types.EXIT, types.SHUTDOWN}  # both end the session by design


def request_methods() -> list[str]:
    """Every request method the server registers, plus the ones pygls answers itself."""
    ls = build_server()
    names = set(ls.protocol.fm.features) | {types.INITIALIZE, types.WORKSPACE_EXECUTE_COMMAND}
    out = []
    for name in sorted(names - NEVER_SEND):
        kinds = types.METHOD_TO_TYPES.get(name)
        if kinds is None or kinds[1] is not None:  # custom methods are requests; notifications have no response type
            out.append(name)
    return out


@pytest.fixture()
def lsp(tmp_path):
    client = RawLsp(tmp_path)
    assert client.initialize() is not None
    client.send({"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {"textDocument": {
        "uri": "file:///h.py", "languageId": "python", "version": 1, "text": "def f(x):\n    return x\n"}}})
    yield client
    client.close()


def test_every_request_with_invalid_params_is_answered(lsp):
    methods = request_methods()
    assert types.TEXT_DOCUMENT_INLINE_COMPLETION in methods and "diffill/status" in methods
    sent = {}
    n = 100
    for method in methods:
        for params in BAD_PARAMS:
            n += 1
            lsp.request(n, method, params, omit_params=params == "omit")
            sent[n] = (method, params)
    missing = [sent[i] for i in sent if lsp.response(i, timeout=20) is None]
    assert missing == []
    assert lsp.alive(1)


def test_notifications_with_invalid_params_leave_the_server_alive(lsp):
    for method in (types.TEXT_DOCUMENT_DID_OPEN, types.TEXT_DOCUMENT_DID_CHANGE, types.TEXT_DOCUMENT_DID_CLOSE,
                   types.WORKSPACE_DID_CHANGE_CONFIGURATION, "$/cancelRequest", "$/nonsense"):
        for params in BAD_PARAMS[1:]:
            lsp.send({"jsonrpc": "2.0", "method": method, "params": params})
    assert lsp.alive(1)


def test_malformed_json_gets_a_parse_error(lsp):
    lsp.send_raw(b"Content-Length: 5\r\n\r\n{bad}")
    reply = lsp.wait_for(lambda m: m.get("error", {}).get("code") == -32700)
    assert reply is not None and reply["id"] is None
    assert lsp.alive(1)


def _status(msg_id) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": msg_id, "method": "diffill/status", "params": {}}).encode()


@pytest.mark.parametrize("attack", ["huge", "thirty_digits", "negative", "lowercase", "lf_only", "lying_long",
                                    "lying_short", "no_length", "long_header_line"])
def test_broken_framing_leaves_the_server_answering(lsp, attack):
    body = _status(7)
    data = {
        "huge": b"Content-Length: 1099511627776\r\n\r\n" + body,
        "thirty_digits": b"Content-Length: " + b"9" * 30 + b"\r\n\r\n" + body,
        "negative": b"Content-Length: -5\r\n\r\n" + body,
        "lowercase": b"content-length: %d\r\n\r\n" % len(body) + body,
        "lf_only": b"Content-Length: %d\n\n" % len(body) + body,
        "lying_long": b"Content-Length: %d\r\n\r\n" % (len(body) + 10_000) + body,
        "lying_short": b"Content-Length: %d\r\n\r\n" % (len(body) - 7) + body,
        "no_length": b"Content-Type: x\r\n\r\n" + body,
        "long_header_line": b"X-Junk: " + b"a" * (50 * 1024 * 1024) + b"\r\n",
    }[attack]
    lsp.send_raw(data)
    assert lsp.alive(1)  # the next well-framed request is answered
    if attack in ("lowercase", "lf_only", "lying_long"):  # these frames are readable: answered too
        assert lsp.response(7, timeout=5) is not None


def test_selected_completion_info_edge_cases_answer_empty(lsp):
    for i, (rng, text) in enumerate([
        ({"start": {"line": 9, "character": 0}, "end": {"line": 9, "character": 2}}, "ret"),
        ({"start": {"line": 1, "character": 4}, "end": {"line": 1, "character": 6}}, "\ud800"),
    ]):
        lsp.request(50 + i, "textDocument/inlineCompletion", {
            "textDocument": {"uri": "file:///h.py"}, "position": {"line": 1, "character": 6},
            "context": {"triggerKind": 1, "selectedCompletionInfo": {"range": rng, "text": text}}})
        reply = lsp.response(50 + i)
        assert reply is not None and "error" not in reply, reply
        assert reply["result"]["items"] == [] or i == 1


def test_fill_holes_with_a_malformed_range_fills_nothing(tmp_path):
    lsp = RawLsp(tmp_path)
    try:
        lsp.initialize()
        lsp.send({"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {"textDocument": {
            "uri": "file:///h.py", "languageId": "python", "version": 1,
            "text": "def f(x):\n    <|hole|>\n\ndef g(y):\n    <|hole|>\n"}}})
        for i, bad in enumerate(["notarange", {"start": {"line": -1, "character": 0}, "end": 3}, 17]):
            lsp.request(60 + i, "workspace/executeCommand", {"command": "diffill.fillHoles",
                                                              "arguments": ["file:///h.py", bad]})
            reply = lsp.response(60 + i)
            assert reply is not None and reply.get("result", {}).get("filled") == 0, reply
    finally:
        lsp.close()


def test_frame_parser_resynchronises():
    good = frame({"jsonrpc": "2.0", "id": 1, "method": "x", "params": {}})
    p = FrameParser(max_header=64, max_body=1000)
    events = p.feed(b"Content-Length: 99999\r\n\r\n" + b"z" * 50 + good)
    assert events[0][0] == "error" and events[-1] == ("body", good.split(b"\r\n\r\n", 1)[1])
    events = p.feed(b"X" * 500)  # a header line past the limit: dropped, bounded
    assert [k for k, _ in events] == ["error"] and len(p.buf) <= 100
    assert p.feed(good)[-1][0] == "body"
