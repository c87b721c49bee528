"""Test helpers: start a real diffill server subprocess and drive it with pytest-lsp.

No editor here supports inline completion, so the client capabilities are built by
hand: inline completion, workspace/configuration, applyEdit with document changes,
work-done progress and the position encodings under test.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient

ROOT = Path(__file__).resolve().parents[2]
FAKE_SERVER = [sys.executable, str(ROOT / "tests" / "lsp_server" / "fakes.py")]
REAL_SERVER = [sys.executable, "-m", "diffill", "lsp"]


def capabilities(encodings: list[str] | None = None, progress: bool = True, configuration: bool = True) -> types.ClientCapabilities:
    return types.ClientCapabilities(
        general=types.GeneralClientCapabilities(position_encodings=encodings) if encodings else None,
        workspace=types.WorkspaceClientCapabilities(
            configuration=configuration,
            apply_edit=True,
            workspace_edit=types.WorkspaceEditClientCapabilities(document_changes=True),
            did_change_configuration=types.DidChangeConfigurationClientCapabilities(dynamic_registration=False),
            execute_command=types.ExecuteCommandClientCapabilities(),
        ),
        text_document=types.TextDocumentClientCapabilities(
            synchronization=types.TextDocumentSyncClientCapabilities(),
            inline_completion=types.InlineCompletionClientCapabilities(),
            completion=types.CompletionClientCapabilities(
                completion_item=types.ClientCompletionItemOptions(
                    snippet_support=False, documentation_format=[types.MarkupKind.PlainText]  # the item's full fill
                )
            ),
            code_action=types.CodeActionClientCapabilities(
                code_action_literal_support=types.ClientCodeActionLiteralOptions(
                    code_action_kind=types.ClientCodeActionKindOptions(value_set=[types.CodeActionKind.RefactorRewrite])
                )
            ),
        ),
        window=types.WindowClientCapabilities(work_done_progress=progress),
    )


@contextlib.asynccontextmanager
async def session(
    command: list[str] = FAKE_SERVER,
    *,
    fake: dict | None = None,
    env: dict[str, str] | None = None,
    init: dict | None = None,
    configuration: dict | None = None,
    encodings: list[str] | None = None,
    tmp: Path | None = None,
):
    """A started, initialized client; shut down on exit."""
    server_env = dict(os.environ)
    server_env["PYTHONPATH"] = str(ROOT) + os.pathsep + server_env.get("PYTHONPATH", "")
    if fake is not None:
        server_env["DIFFILL_FAKE_CORE"] = json.dumps(fake)
    if tmp is not None:
        server_env["XDG_STATE_HOME"] = str(tmp / "state")
        server_env["XDG_RUNTIME_DIR"] = str(tmp)
    server_env.update(env or {})
    client: LanguageClient = await ClientServerConfig(server_command=command, server_env=server_env).start()
    client.applied_edits = []  # type: ignore[attr-defined]

    @client.feature(types.WORKSPACE_APPLY_EDIT)
    def apply_edit(params: types.ApplyWorkspaceEditParams) -> types.ApplyWorkspaceEditResult:
        client.applied_edits.append(params)  # type: ignore[attr-defined]
        return types.ApplyWorkspaceEditResult(applied=True)

    if configuration is not None:
        client.set_configuration(configuration, section="diffill")
    client.init_result = await client.initialize_session(  # type: ignore[attr-defined]
        types.InitializeParams(
            capabilities=capabilities(encodings),
            initialization_options=init,
            root_uri=(tmp or ROOT).as_uri(),
        )
    )
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            await client.shutdown_session()
        await client.stop()


def open_doc(client: LanguageClient, uri: str, text: str, language: str = "python", version: int = 1) -> None:
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(uri=uri, language_id=language, version=version, text=text)
        )
    )


def change_doc(client: LanguageClient, uri: str, version: int, text: str,
               start: tuple[int, int] | None = None, end: tuple[int, int] | None = None) -> None:
    if start is None:
        change: Any = types.TextDocumentContentChangeWholeDocument(text=text)
    else:
        end = end or start
        change = types.TextDocumentContentChangePartial(
            range=types.Range(start=types.Position(*start), end=types.Position(*end)), text=text
        )
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version), content_changes=[change]
        )
    )


def inline_params(uri: str, line: int, character: int, invoked: bool = False,
                  selected: types.SelectedCompletionInfo | None = None) -> types.InlineCompletionParams:
    kind = types.InlineCompletionTriggerKind.Invoked if invoked else types.InlineCompletionTriggerKind.Automatic
    return types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        position=types.Position(line=line, character=character),
        context=types.InlineCompletionContext(trigger_kind=kind, selected_completion_info=selected),
    )


async def inline(client: LanguageClient, uri: str, line: int, character: int, **kw) -> types.InlineCompletionList:
    return await client.text_document_inline_completion_async(inline_params(uri, line, character, **kw))


def plain(value: Any) -> Any:
    """pygls hands untyped results back as namedtuples ("Object"); make them dicts."""
    if hasattr(value, "_asdict"):
        return {k: plain(v) for k, v in value._asdict().items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


async def status(client: LanguageClient) -> dict:
    return plain(await client.protocol.send_request_async("diffill/status", {}))


async def execute(client: LanguageClient, command: str, arguments: list) -> Any:
    return plain(await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command=command, arguments=arguments)
    ))


async def wait_ready(client: LanguageClient, timeout: float = 60.0) -> dict:
    """Poll diffill/status until the core is ready (or failed)."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        st = await status(client)
        if st["core"]["state"] in ("ready", "failed") or loop.time() > deadline:
            return st
        await asyncio.sleep(0.05)
