"""``diffill lsp --model FOLDER --device D``: for editors configured by command line.

The flags give what the settings' defaults (``model.path`` "", ``model.device``
"auto") stand for, since editors send those defaults explicitly; a value the editor
sets wins."""

import pytest

from tests.lsp_server.lsp_session import REAL_SERVER, session, wait_ready

pytestmark = pytest.mark.e2e


async def test_lsp_model_flag_survives_the_editors_default_settings(tmp_path, tiny_model):
    command = REAL_SERVER + ["--model", str(tiny_model), "--device", "cpu"]
    editor_defaults = {"model": {"path": "", "device": "auto"}, "fill": {"maxTokens": 8}}  # as Neovim/VS Code send
    async with session(command, init=editor_defaults, configuration=editor_defaults, tmp=tmp_path) as client:
        st = await wait_ready(client)
        assert st["core"]["state"] == "ready", st["core"]
        assert st["model"] == tiny_model.name and st["device"] == "cpu"
        assert st["settings"]["model"] == {"path": str(tiny_model.resolve()), "device": "cpu"}
