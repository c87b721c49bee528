"""Start-up as editors really do it: notifications right behind ``initialized``.

Neovim (and VS Code) send ``workspace/didChangeConfiguration`` at once after
``initialized``, then ``didOpen`` and the first completion request, all before the
server has answered anything. That used to start the core twice, cancel the first
start and show the user "internal error: CANCELLED: <Future ...>". The real server
and a private core on the tiny model, in exactly that order."""

import asyncio

import pytest
from lsprotocol import types

from tests.lsp_server.lsp_session import REAL_SERVER, inline_params, open_doc, session, status

pytestmark = pytest.mark.e2e

URI = "file:///tmp/diffill_e2e/race.py"
TEXT = "def add(a, b):\n    return \n"


@pytest.mark.parametrize("variant", ["settings", "null", "settings-no-init-options"])
async def test_neovim_start_order_starts_one_core_and_shows_no_error(tmp_path, private_init, variant):
    init = None if variant == "settings-no-init-options" else private_init
    # The client answers workspace/configuration with the same settings, as Neovim does
    # with its `settings` table.
    async with session(REAL_SERVER, init=init, configuration=private_init, tmp=tmp_path) as client:
        # initialize and initialized went out in initialize_session; nothing awaited since
        settings = None if variant == "null" else {"diffill": private_init}
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=settings))
        open_doc(client, URI, TEXT)
        first = client.text_document_inline_completion_async(inline_params(URI, 1, 11, invoked=True))
        result = await asyncio.wait_for(first, 120)  # waits for the core to come up
        assert isinstance(result, types.InlineCompletionList)
        # a second didChangeConfiguration with unchanged settings restarts nothing
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=settings))
        st = await status(client)
        assert st["core"]["state"] == "ready"
        assert st["counters"]["coreStarts"] == 1
        begins = [v for reports in client.progress_reports.values() for v in reports
                  if isinstance(v, types.WorkDoneProgressBegin)]
        ends = [v for reports in client.progress_reports.values() for v in reports
                if isinstance(v, types.WorkDoneProgressEnd)]
        assert len(begins) == len(ends) == 1  # one load, and its progress closed
        errors = [m.message for m in client.messages if m.type == types.MessageType.Error]
        assert errors == []
        assert st["settings"]["fill"]["maxTokens"] == private_init["fill"]["maxTokens"]
