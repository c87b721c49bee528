"""The real server over stdio, on a fake core (tests/lsp_server/fakes.py).

Deterministic checks of the LSP surface and the latency machinery; tests/e2e runs
the same server on a real core."""

import ast
import asyncio
import json

import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcRequestCancelled

from tests.lsp_server.lsp_session import execute, change_doc, inline, inline_params, open_doc, session, status, wait_ready

URI = "file:///tmp/diffill_test/a.py"
PY = "def add(a, b):\n    return \n"


async def test_capabilities_and_inline_completion(tmp_path):
    async with session(fake={"text": "a + b"}, tmp=tmp_path) as client:
        st = await wait_ready(client)
        assert st["core"]["state"] == "ready" and st["model"] == "fake"
        open_doc(client, URI, PY)
        res = await inline(client, URI, 1, 11)
        assert len(res.items) == 1
        item = res.items[0]
        assert item.insert_text == "a + b"
        assert item.range.start == item.range.end == types.Position(1, 11)
        assert item.command is not None and item.command.command == "diffill.accepted"
        # progress while loading
        kinds = [type(v).__name__ for reports in client.progress_reports.values() for v in reports]
        assert kinds[:1] == ["WorkDoneProgressBegin"] and kinds[-1] == "WorkDoneProgressEnd"


async def test_server_advertises_its_features(tmp_path):
    async with session(fake={}, tmp=tmp_path) as client:
        caps = client.init_result.capabilities
        assert caps.inline_completion_provider is not None
        assert caps.completion_provider is not None and "." in caps.completion_provider.trigger_characters
        assert set(caps.execute_command_provider.commands) == {"diffill.fillHoles", "diffill.accepted"}
        assert caps.code_action_provider is not None
        assert caps.position_encoding == types.PositionEncodingKind.Utf16
        assert caps.text_document_sync.change == types.TextDocumentSyncKind.Incremental
        assert client.init_result.server_info.name == "diffill"


async def test_invoked_gives_several_items_automatic_one(tmp_path):
    async with session(fake={"text": "x = 1\n    y = 2"}, tmp=tmp_path) as client:
        open_doc(client, URI, "def f():\n    \n")
        auto = await inline(client, URI, 1, 4)
        invoked = await inline(client, URI, 1, 4, invoked=True)
        assert len(auto.items) == 1
        assert len(invoked.items) >= 2
        assert {i.insert_text for i in auto.items} <= {i.insert_text for i in invoked.items}
        for item in invoked.items:
            assert item.range.start.line == item.range.end.line


async def test_completion_fallback(tmp_path):
    async with session(fake={"text": "a + b"}, tmp=tmp_path) as client:
        open_doc(client, URI, PY)
        res = await client.text_document_completion_async(
            types.CompletionParams(text_document=types.TextDocumentIdentifier(uri=URI), position=types.Position(1, 11))
        )
        assert res.is_incomplete and len(res.items) == 1
        edit = res.items[0].text_edit
        assert edit.new_text == "a + b" and edit.range.start == types.Position(1, 11)
        client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(settings={"diffill": {"completion": {"enable": False}}})
        )
        await asyncio.sleep(0.1)
        res = await client.text_document_completion_async(
            types.CompletionParams(text_document=types.TextDocumentIdentifier(uri=URI), position=types.Position(1, 11))
        )
        assert res is None or not res.items


async def test_newest_wins_under_a_burst(tmp_path):
    # Each fill takes 2 s, far longer than sending the burst even on a loaded machine:
    # with 0.2 s fills a slow client let early requests finish before later ones arrived.
    async with session(fake={"text": "a + b", "steps": 200, "step_s": 0.01}, tmp=tmp_path,
                       init={"debounce": {"maxMs": 0}}) as client:
        await wait_ready(client)
        open_doc(client, URI, PY)
        tasks = [asyncio.ensure_future(inline(client, URI, 1, 11, invoked=True)) for _ in range(50)]
        results = await asyncio.gather(*tasks, return_exceptions=True)
        answered = [r for r in results if isinstance(r, types.InlineCompletionList)]
        cancelled = [r for r in results if isinstance(r, JsonRpcRequestCancelled)]
        assert len(answered) == 1 and results[-1] is answered[0] and answered[0].items
        assert len(cancelled) == 49
        st = await status(client)
        assert st["core"]["fake"]["completed"] == 1
        assert st["counters"]["superseded"] == 49


async def test_cancel_request_reaches_the_core(tmp_path):
    async with session(fake={"text": "a + b", "steps": 200, "step_s": 0.01}, tmp=tmp_path) as client:
        await wait_ready(client)
        open_doc(client, URI, PY)
        fut = asyncio.ensure_future(client.protocol.send_request_async(
            types.TEXT_DOCUMENT_INLINE_COMPLETION, inline_params(URI, 1, 11, invoked=True), msg_id="long-1"
        ))
        await asyncio.sleep(0.3)
        client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id="long-1"))
        with pytest.raises(JsonRpcRequestCancelled):
            await asyncio.wait_for(fut, 5)
        st = await status(client)
        assert st["core"]["fake"]["cancelled"] == 1 and st["core"]["fake"]["completed"] == 0


async def test_typed_ahead_cache(tmp_path):
    async with session(fake={"text": "a + b"}, tmp=tmp_path) as client:
        open_doc(client, URI, PY)
        first = await inline(client, URI, 1, 11)
        assert first.items[0].insert_text == "a + b"
        change_doc(client, URI, 2, "a ", start=(1, 11))
        second = await inline(client, URI, 1, 13)
        assert second.items[0].insert_text == "+ b"
        assert second.items[0].range.start == types.Position(1, 13)
        st = await status(client)
        assert st["core"]["fake"]["fills"] == 1 and st["counters"]["cacheHits"] == 1


async def test_fill_holes_applies_a_versioned_edit(tmp_path):
    text = "def a():\n    <|fill|>\n\nx = <|fill|>\ny = <|fill|>\n"
    async with session(fake={"text": "1"}, tmp=tmp_path) as client:
        open_doc(client, URI, text, version=7)
        res = await execute(client, "diffill.fillHoles", [URI])
        assert res == {"filled": 3}
        (applied,) = client.applied_edits
        (doc_edit,) = applied.edit.document_changes
        assert doc_edit.text_document.version == 7 and doc_edit.text_document.uri == URI
        assert len(doc_edit.edits) == 3
        st = await status(client)
        assert len(st["core"]["fake"]["last_segments"]) == 4


async def test_fill_holes_refused_when_the_document_changed(tmp_path):
    async with session(fake={"text": "1", "steps": 30, "step_s": 0.01}, tmp=tmp_path) as client:
        await wait_ready(client)
        open_doc(client, URI, "x = <|fill|>\n", version=1)
        fut = asyncio.ensure_future(execute(client, "diffill.fillHoles", [URI]))
        await asyncio.sleep(0.1)
        change_doc(client, URI, 2, "y = <|fill|>\n")
        res = await asyncio.wait_for(fut, 5)
        assert res["filled"] == 0 and res["applied"] is False
        assert not client.applied_edits
        assert any("changed" in m.message for m in client.messages)


def _actions(result) -> list[tuple[str, str, list]]:
    """(title, command, arguments) of code actions. lsprotocol's converter structures a
    CodeAction in a `Command | CodeAction` list as a Command whose `command` is the
    str() of the nested command (an upstream quirk of the client side); undo that."""
    out = []
    for a in result:
        nested = a.command if isinstance(a, types.CodeAction) else ast.literal_eval(a.command)
        if isinstance(nested, types.Command):
            out.append((a.title, nested.command, list(nested.arguments or [])))
        else:
            out.append((a.title, nested["command"], list(nested.get("arguments") or [])))
    return out


async def test_code_actions(tmp_path):
    async with session(fake={"text": "1"}, tmp=tmp_path) as client:
        open_doc(client, URI, "a = <|fill|>\nb = <|fill|>\n")
        rng = types.Range(start=types.Position(0, 5), end=types.Position(0, 5))
        actions = await client.text_document_code_action_async(
            types.CodeActionParams(text_document=types.TextDocumentIdentifier(uri=URI), range=rng,
                                   context=types.CodeActionContext(diagnostics=[]))
        )
        actions = _actions(actions)
        assert [a[0] for a in actions] == ["diffill: Fill hole", "diffill: Fill all holes"]
        res = await execute(client, actions[0][1], actions[0][2])
        assert res == {"filled": 1}
        sel = types.Range(start=types.Position(1, 0), end=types.Position(1, 5))
        actions = await client.text_document_code_action_async(
            types.CodeActionParams(text_document=types.TextDocumentIdentifier(uri=URI), range=sel,
                                   context=types.CodeActionContext(diagnostics=[]))
        )
        regen = [a for a in _actions(actions) if a[0] == "diffill: Regenerate selection"]
        assert regen
        res = await execute(client, regen[0][1], regen[0][2])
        assert res == {"filled": 1}


async def test_bad_settings_one_message_and_defaults(tmp_path):
    async with session(fake={"text": "a + b"}, tmp=tmp_path, init={"fill": {"maxTokens": "lots"}, "bogus": True},
                       configuration={"debounce": {"maxMs": 0}}) as client:
        await wait_ready(client)
        open_doc(client, URI, PY)
        await inline(client, URI, 1, 11)
        bad = [m for m in client.messages if "bad setting" in m.message]
        assert len(bad) == 1 and "fill.maxTokens" in bad[0].message and "bogus" in bad[0].message
        st = await status(client)
        assert st["settings"]["fill"]["maxTokens"] == 64 and st["settings"]["debounce"]["maxMs"] == 0
        client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(settings={"diffill": {"fill": {"maxTokens": 5}}})
        )
        await asyncio.sleep(0.1)
        open_doc(client, "file:///tmp/diffill_test/b.py", "def f():\n    \n")
        await inline(client, "file:///tmp/diffill_test/b.py", 1, 4)
        st = await status(client)
        assert st["settings"]["fill"]["maxTokens"] == 5


async def test_accept_is_logged_locally(tmp_path):
    async with session(fake={"text": "a + b"}, tmp=tmp_path) as client:
        open_doc(client, URI, PY)
        res = await inline(client, URI, 1, 11)
        cmd = res.items[0].command
        await execute(client, cmd.command, cmd.arguments)
        st = await status(client)
        assert st["counters"]["accepted"] == 1
    lines = (tmp_path / "state" / "diffill" / "feedback.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["event"] == "accept"


async def test_core_start_failure_is_told_once_and_requests_answer_empty(tmp_path):
    async with session(fake={"fail_start": "no model here"}, tmp=tmp_path) as client:
        st = await wait_ready(client)
        assert st["core"]["state"] == "failed"
        open_doc(client, URI, PY)
        for _ in range(3):
            res = await inline(client, URI, 1, 11)
            assert not res.items
        failed = [m for m in client.messages if "no model here" in m.message]
        assert len(failed) == 1


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16", "utf-32"])
async def test_position_encodings(tmp_path, encoding):
    # "é" is 2 bytes / 1 unit; "😀" is 4 bytes / 2 utf-16 units / 1 code point
    line = "s = 'é😀' + "
    col = {"utf-8": len(line.encode()), "utf-16": len(line.encode("utf-16-le")) // 2, "utf-32": len(line)}[encoding]
    async with session(fake={"text": "t"}, tmp=tmp_path, encodings=[encoding]) as client:
        st = await status(client)
        assert st["server"]["encoding"] == encoding
        open_doc(client, URI, line + "\nz = 1\n")
        res = await inline(client, URI, 0, col)
        assert res.items and res.items[0].range.start == types.Position(0, col)
        st = await status(client)
        assert st["core"]["fake"]["last_segments"][0] == line


async def test_bad_input_is_answered_cleanly(tmp_path):
    async with session(fake={"text": "t"}, tmp=tmp_path) as client:
        open_doc(client, URI, "s = '😀'\n")
        assert list((await inline(client, URI, 99, 0)).items) == []  # past the end
        assert list((await inline(client, "file:///nope.py", 0, 0)).items) == []  # unknown document
        res = await inline(client, URI, 0, 6)  # utf-16 column inside the surrogate pair
        assert isinstance(res, types.InlineCompletionList)
        for item in res.items:  # whatever is offered is anchored on line 0, inside it
            assert item.range.start.line == 0 and 0 <= item.range.start.character <= 8
        open_doc(client, "file:///tmp/bin.py", "\x00\x01\ufffe\udc80junk\x7f" * 100)
        assert isinstance(await inline(client, "file:///tmp/bin.py", 0, 3), types.InlineCompletionList)
        # an unknown language has no tree, but a line still gets the model's fill
        open_doc(client, "file:///tmp/x.zzz", "hello = \n", language="klingon")
        res = await inline(client, "file:///tmp/x.zzz", 0, 8)
        assert [i.insert_text for i in res.items] == ["t"]
        st = await status(client)  # still serving, and nothing went wrong inside
        assert st["server"]["documents"] == 3
        assert st["counters"].get("errors", 0) == 0 and st["counters"]["answered"] >= 1
        assert not [m for m in client.messages if m.type == types.MessageType.Error], client.messages


async def test_selected_completion_info_is_honoured(tmp_path):
    async with session(fake={"text": ".join(a, b)"}, tmp=tmp_path) as client:
        open_doc(client, URI, "import os\nx = os.pa\n")
        rng = types.Range(start=types.Position(1, 7), end=types.Position(1, 9))
        selected = types.SelectedCompletionInfo(range=rng, text="path")
        res = await inline(client, URI, 1, 9, selected=selected)
        assert len(res.items) == 1
        item = res.items[0]
        assert item.insert_text.startswith("path") and len(item.insert_text) > len("path")
        assert item.range == rng
        st = await status(client)
        assert st["core"]["fake"]["last_segments"][0].endswith("x = os.path")


async def test_never_starves_under_continuous_typing(tmp_path):
    # each fill takes ~100 ms, keystrokes come every 20 ms: only the request sent when
    # typing stops is answered, and it is.
    async with session(fake={"text": "1", "steps": 10, "step_s": 0.01}, tmp=tmp_path) as client:
        await wait_ready(client)
        open_doc(client, URI, "x = \n")
        tasks = []
        for i, ch in enumerate("foo + bar"):
            change_doc(client, URI, i + 2, ch, start=(0, 4 + i))
            tasks.append(asyncio.ensure_future(inline(client, URI, 0, 5 + i)))
            await asyncio.sleep(0.02)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(results[-1], types.InlineCompletionList) and results[-1].items
        assert all(isinstance(r, JsonRpcRequestCancelled) for r in results[:-1])


async def test_fill_holes_leaves_holes_without_a_usable_fill(tmp_path):
    async with session(fake={"text": "   "}, tmp=tmp_path) as client:
        open_doc(client, URI, "x = <|fill|>\n")
        assert await execute(client, "diffill.fillHoles", [URI]) == {"filled": 0}
        assert not client.applied_edits


async def test_repeated_internal_errors_are_told_once(tmp_path, monkeypatch):
    from pygls.protocol import JsonRPCNotification

    from lsp_server.runtime import DiffillServer

    async with session(fake={}, tmp=tmp_path) as client:
        bad = {"textDocument": {"uri": URI, "version": 2}, "contentChanges": [{"range": "bad", "text": 1}]}
        for _ in range(3):
            client.protocol._send_data(JsonRPCNotification(method="textDocument/didChange", params=bad, jsonrpc="2.0"))
        await asyncio.sleep(0.3)
        st = await status(client)  # still serving
        assert st["server"]["name"] == "diffill"
        # An editor's malformed notification is its bug: logged, no "internal error" popup (issue 22).
        errors = [m for m in client.messages if m.type == types.MessageType.Error]
        assert errors == [], client.messages
    server, shown = DiffillServer(), []  # a real handler error, three times: told once
    monkeypatch.setattr(server, "window_show_message", lambda params: shown.append(params.message))
    for _ in range(3):
        server.report_server_error(RuntimeError("boom"), None)
    assert shown == ["diffill: internal error: boom"]


async def test_a_burst_for_every_open_buffer_runs_only_the_edited_one(tmp_path):
    # Neovim 0.12-dev: one automatic request per open buffer, each with the active
    # window's cursor. Only the most recently edited document's reaches the core, in
    # either order of arrival; a lone request for another document still runs.
    uris = [f"file:///tmp/diffill_test/{n}.py" for n in "abc"]
    async with session(fake={"text": "a + b", "steps": 20, "step_s": 0.01}, tmp=tmp_path,
                       init={"debounce": {"maxMs": 0}}) as client:
        await wait_ready(client)
        for uri in uris:
            open_doc(client, uri, PY)
        await asyncio.sleep(0.3)  # the opens are not one burst with what follows
        from_cache = 0
        for edited, order in ((1, [0, 1, 2]), (2, [2, 0, 1]), (0, [1, 2, 0])):
            change_doc(client, uris[edited], 2 + edited, "a", start=(1, 11))
            st = await status(client)
            before, hits = st["core"]["fake"]["completed"], st["counters"].get("cacheHits", 0)
            results = await asyncio.gather(*[inline(client, uris[i], 1, 12) for i in order], return_exceptions=True)
            by_uri = dict(zip([uris[i] for i in order], results))
            assert isinstance(by_uri[uris[edited]], types.InlineCompletionList) and by_uri[uris[edited]].items
            st = await status(client)
            # The others: dropped (empty), cancelled if one had started first, or answered
            # by the typed-ahead cache before the burst was seen (no core work at all).
            others = [r for u, r in by_uri.items() if u != uris[edited]]
            answered = [r for r in others if not isinstance(r, JsonRpcRequestCancelled) and r.items]
            assert len(answered) <= st["counters"].get("cacheHits", 0) - hits, by_uri
            from_cache += st["counters"].get("cacheHits", 0) - hits
            # One fill ran to the end; one that had started first was cancelled at once.
            assert st["core"]["fake"]["completed"] - before == 1
            await asyncio.sleep(0.3)
        lone = await inline(client, uris[1], 1, 11)  # the user moved to b and paused there
        assert lone.items
        st = await status(client)
        assert st["counters"]["offscreen"] + from_cache >= 6


async def test_status_shows_what_each_document_cost_the_core(tmp_path):
    async with session(fake={"text": "a + b"}, tmp=tmp_path) as client:
        await wait_ready(client)
        open_doc(client, URI, PY)
        await inline(client, URI, 1, 11)
        st = await status(client)
        [doc] = st["documents"]
        assert doc["uri"] == URI
        assert doc["fills"] == 1 and doc["lastFillMs"] >= 0
        assert doc["reusedTokens"] == 0 and doc["encodedTokens"] == doc["cachedTokens"] > 0  # cold
        change_doc(client, URI, 2, "x", start=(1, 11))  # not what the fill began with: the model runs again
        await inline(client, URI, 1, 12)
        [doc] = (await status(client))["documents"]
        assert doc["fills"] == 2 and doc["encodedTokens"] < doc["cachedTokens"] and 0 < doc["reuse"] < 1
        assert doc["reusedTokens"] + doc["encodedTokens"] == doc["cachedTokens"]


async def test_fill_holes_shows_the_cores_progress_until_it_ends(tmp_path):
    text = "def a():\n    <|fill|>\n\nx = <|fill|>\n"
    # 60 steps of 0.05 s: 3 s, past any deadline a test could mistake for one.
    async with session(fake={"text": "1", "steps": 60, "step_s": 0.05}, tmp=tmp_path) as client:
        await wait_ready(client)
        open_doc(client, URI, text)
        before = set(client.progress_reports)
        res = await execute(client, "diffill.fillHoles", [URI])
        assert res == {"filled": 2}
        [token] = [t for t in client.progress_reports if t not in before and "fillHoles" in str(t)]
        reports = client.progress_reports[token]
        kinds = [type(r).__name__ for r in reports]
        assert kinds[0] == "WorkDoneProgressBegin" and kinds[-1] == "WorkDoneProgressEnd"
        middle = reports[1:-1]
        assert len(middle) >= 50 and all("tokens written" in r.message for r in middle)
        percents = [r.percentage for r in middle]
        assert percents == sorted(percents) and 0 <= percents[0] and percents[-1] <= 100


def test_progress_message_of_each_phase():
    from lsp_server.features.fill_holes import progress_message

    assert progress_message({"phase": "queued"}) == ("waiting for the core", 0)
    msg, pct = progress_message({"phase": "encoding", "encoded": 300, "context": 600, "hole": 1, "holes": 2})
    assert msg == "hole 2/2: reading the context, 300/600 tokens" and pct == 62
    msg, pct = progress_message({"phase": "decoding", "tokens": 7, "steps": 64, "hole": 0, "holes": 1})
    assert msg == "7 tokens written" and pct == 100
    # Junk from a newer or broken core still gives a message in range.
    msg, pct = progress_message({"phase": "encoding", "encoded": 9, "context": 0, "hole": 5, "holes": 0})
    assert 0 <= pct <= 100 and msg


LONG = "".join(f"def f{i}(a, b):\n    return a * {i} + b\n\n" for i in range(200)) + "def g(x):\n    return \n"


async def test_a_cold_window_is_short_and_the_full_one_warms_for_the_next_request(tmp_path):
    # A CPU core: the first request of a big file sends coldPrefixBytes of prefix, and the
    # full window is warmed; the next keystroke (same window key) then sends the full one.
    line = LONG.count("\n") - 1
    async with session(fake={"text": "x + 1", "device": "cpu", "steps": 5}, tmp=tmp_path,
                       init={"context": {"prefixBytes": 6000, "coldPrefixBytes": 512}}) as client:
        await wait_ready(client)
        open_doc(client, URI, LONG)
        first = await inline(client, URI, line, 11)
        assert first.items
        fake = (await status(client))["core"]["fake"]
        assert len(fake["last_segments"][0].encode()) <= 512  # the short prefix window
        for _ in range(100):  # the warm-up runs in the background
            st = await status(client)
            if st["core"]["fake"]["warmed"]:
                break
            await asyncio.sleep(0.05)
        [warm] = st["core"]["fake"]["warms"]
        assert 4500 <= warm[0] <= 6000  # the full prefix window (its start on a 1500-byte grid)
        change_doc(client, URI, 2, "y", start=(line, 11))  # not the fill's first character
        second = await inline(client, URI, line, 12)
        assert second.items
        st = await status(client)
        fake = st["core"]["fake"]
        assert len(fake["last_segments"][0].encode()) >= 4500  # the full window now
        [doc] = st["documents"]
        assert doc["lastWindow"] == "full" and doc["reuse"] > 0.9  # the warmed context was reused
        # A jump elsewhere: another window key, short again, and its own warm-up.
        third = await inline(client, URI, 200, 4)
        st = await status(client)
        assert st["documents"][0]["lastWindow"] == "short" and st["warmups"]["started"] == 2


async def test_windows_stay_full_on_a_core_of_unknown_device(tmp_path):
    line = LONG.count("\n") - 1
    async with session(fake={"text": "x + 1"}, tmp=tmp_path, init={"context": {"coldPrefixBytes": 512}}) as client:
        await wait_ready(client)
        open_doc(client, URI, LONG)
        await inline(client, URI, line, 11)
        st = await status(client)
        assert len(st["core"]["fake"]["last_segments"][0].encode()) >= 4500 and not st["core"]["fake"]["warms"]


async def test_a_cold_automatic_request_answers_one_line_and_an_invoked_one_the_block(tmp_path):
    text = LONG + "\ndef h(items):\n    \n"
    line = text.count("\n") - 1
    async with session(fake={"text": "total = 0\n    for x in items:\n        total += x", "device": "cpu"},
                       tmp=tmp_path, init={"context": {"coldPrefixBytes": 512}, "debounce": {"maxMs": 0}}) as client:
        await wait_ready(client)
        open_doc(client, URI, text)
        auto = await inline(client, URI, line, 4)
        st = await status(client)
        assert st["core"]["fake"]["last_stops"][0]["max_lines"] == 1  # decoded as a line hole
        assert [i.insert_text for i in auto.items] == ["total = 0"]
        invoked = await inline(client, URI, line, 4, invoked=True)  # the user asked: the whole block
        st = await status(client)
        assert st["core"]["fake"]["last_stops"][0]["max_lines"] != 1
        assert any("\n" in i.insert_text for i in invoked.items)
