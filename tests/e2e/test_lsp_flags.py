"""``diffill lsp --model FOLDER --device D --weights W``: for editors configured by command line.

The flags give what the settings' defaults (``model.path`` "", ``model.device``
"auto", ``model.weights`` "auto") stand for, since editors send those defaults explicitly; a value the editor
sets wins."""

import pytest

from tests.lsp_server.lsp_session import REAL_SERVER, session, wait_ready

pytestmark = pytest.mark.e2e


async def test_lsp_model_flag_survives_the_editors_default_settings(tmp_path, tiny_model):
    command = REAL_SERVER + ["--model", str(tiny_model), "--device", "cpu", "--weights", "int8"]
    editor_defaults = {"model": {"path": "", "device": "auto", "weights": "auto"}, "fill": {"maxTokens": 8}}  # as Neovim/VS Code send
    async with session(command, init=editor_defaults, configuration=editor_defaults, tmp=tmp_path) as client:
        st = await wait_ready(client)
        assert st["core"]["state"] == "ready", st["core"]
        assert st["model"] == tiny_model.name and st["device"] == "cpu"
        assert st["settings"]["model"] == {"path": str(tiny_model.resolve()), "device": "cpu", "weights": "int8"}
        assert st["weights"] == "int8"  # the private core was started with it and runs it


async def test_the_editors_weights_setting_wins_over_the_flag(tmp_path, tiny_model):
    command = REAL_SERVER + ["--model", str(tiny_model), "--device", "cpu", "--weights", "int8"]
    chosen = {"model": {"weights": "float32"}}
    async with session(command, init=chosen, configuration=chosen, tmp=tmp_path) as client:
        st = await wait_ready(client)
        assert st["settings"]["model"]["weights"] == "float32" and st["weights"] == "float32"


async def test_lsp_threads_flag_reaches_the_private_core_and_the_editor_value_wins(tmp_path, tiny_model):
    command = REAL_SERVER + ["--model", str(tiny_model), "--device", "cpu", "--threads", "1"]
    editor_defaults = {"core": {"threads": 0}}  # the default, sent explicitly
    async with session(command, init=editor_defaults, configuration=editor_defaults, tmp=tmp_path) as client:
        st = await wait_ready(client)
        assert st["settings"]["core"]["threads"] == 1
        assert st["core"]["threads"]["mode"] == "fixed 1"  # the core's own report: --threads 1 reached it
    chosen = {"core": {"threads": 0}}
    async with session(REAL_SERVER + ["--model", str(tiny_model), "--device", "cpu"], init=chosen,
                       configuration=chosen, tmp=tmp_path) as client:
        st = await wait_ready(client)
        assert st["settings"]["core"]["threads"] == 0 and st["core"]["threads"]["mode"] == "auto"


@pytest.mark.parametrize("command", [["lsp"], ["core"], ["fill", "x.py"]])
def test_a_bad_threads_value_is_one_line(command, tmp_path):
    import subprocess
    import sys

    (tmp_path / "x.py").write_text("x = <|fill|>\n")
    out = subprocess.run([sys.executable, "-m", "diffill", *command, "--threads", "-1"], capture_output=True,
                         text=True, cwd=tmp_path, timeout=60)
    assert out.returncode == 2 and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "--threads -1" in lines[0], out.stderr
