"""The smaller findings of the hostile run (issue 22 item 9): a didChange with a negative line
pops up no "internal error" (the document is forgotten until reopened, so no fill is made
for a text the editor does not show); core events read "diffill: ..." once, not "diffill:
diffill: ..."; feedback.jsonl is 0600 in a 0700 folder; a repository's workspace settings
cannot set the command VS Code runs or the core it sends code to."""
from __future__ import annotations

import json
import os
import stat

from lsp_server.feedback import FeedbackLog, Stats, default_log_path
from lsp_server.runtime import DiffillServer
from tests.hostile.raw_lsp import ROOT, RawLsp

URI = "file:///x.py"


def test_a_did_change_with_a_negative_line_is_no_internal_error(tmp_path):
    s = RawLsp(tmp_path)
    try:
        s.initialize()
        s.send({"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {"textDocument": {
            "uri": URI, "languageId": "python", "version": 1, "text": "def f():\n    return 1\n"}}})
        s.send({"jsonrpc": "2.0", "method": "textDocument/didChange", "params": {
            "textDocument": {"uri": URI, "version": 2},
            "contentChanges": [{"range": {"start": {"line": -1, "character": 0}, "end": {"line": 0, "character": 0}},
                                "text": "x"}]}})
        s.request(7, "diffill/status", {})
        status = s.response(7)["result"]
        assert status["server"]["documents"] == 0  # forgotten: its copy no longer matches the editor's
        s.request(8, "textDocument/inlineCompletion", {
            "textDocument": {"uri": URI}, "position": {"line": 1, "character": 4},
            "context": {"triggerKind": 1}})
        assert s.response(8)["result"] in (None, {"items": []})
        popups = [m for m in s.inbox if m.get("method") == "window/showMessage"]
        assert not popups, popups
    finally:
        s.close()


def test_core_events_say_diffill_once(monkeypatch):
    server = DiffillServer()
    shown = []
    monkeypatch.setattr(server, "window_show_message", lambda params: shown.append(params.message))
    server._on_core_event("restarted", "diffill: the private core was replaced by its standby")
    server._on_core_event("died", "the core at tcp:h:1 stopped")  # a connection that does not prefix
    assert shown == ["diffill: the private core was replaced by its standby", "diffill: the core at tcp:h:1 stopped"]


def test_feedback_log_is_private(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    path = default_log_path()
    path.parent.mkdir(parents=True)
    path.parent.chmod(0o755)  # as an older version left it
    path.write_text("")
    path.chmod(0o644)
    fb = FeedbackLog(path, Stats())
    (sid,) = fb.shown("a.py", "python", ["x = 1"], 12.0)
    assert fb.accepted(sid)
    assert json.loads(path.read_text().splitlines()[-1])["event"] == "accept"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700

    fresh = tmp_path / "elsewhere" / "state" / "fb.jsonl"  # a feedback.path of the user's: made 0700 too
    fb = FeedbackLog(fresh, Stats())
    assert fb.accepted(fb.shown("a.py", "python", ["y"], 1.0)[0])
    assert stat.S_IMODE(os.stat(fresh).st_mode) == 0o600 and stat.S_IMODE(os.stat(fresh.parent).st_mode) == 0o700


def test_feedback_log_is_never_written_through_a_planted_link(tmp_path):
    target = tmp_path / "victim.txt"
    target.write_text("keep\n")
    link = tmp_path / "fb.jsonl"
    link.symlink_to(target)
    fb = FeedbackLog(link, Stats())
    fb.accepted(fb.shown("a.py", "python", ["y"], 1.0)[0])
    assert target.read_text() == "keep\n" and fb.path is None  # refused (logged), then off


def test_vscode_command_and_core_address_are_machine_settings():
    """A repository's .vscode/settings.json must not choose the program the editor runs
    (diffill.command) or where the editor's code is sent (diffill.core.address)."""
    package = json.loads((ROOT / "editors" / "vscode" / "package.json").read_text(encoding="utf-8"))
    config = package["contributes"]["configuration"]
    props = config["properties"] if isinstance(config, dict) else {k: v for c in config for k, v in c["properties"].items()}
    assert props["diffill.command"].get("scope") == "machine"
    assert props["diffill.core.address"].get("scope") == "machine"
