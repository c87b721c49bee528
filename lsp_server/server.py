"""LSP handlers of the diffill server, and ``diffill lsp``.

Owns: the handler functions only, registered on a ``DiffillServer`` by
``build_server``. Each converts its params with conversions.py, asks the server
(runtime.py: documents, settings) or one of its features (``lsp_server.features``:
completion, fill holes, status, core start), and converts the answer with conversions.py.

Must not know: torch, how fills are computed, how results are built.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from lsprotocol import types

from diffusion_core.protocol import WEIGHTS_SCHEMES
from lsp_server import conversions, guards
from lsp_server.core_link import CoreFactory, real_core_factory
from lsp_server.features import status as status_feature
from lsp_server.features.fill_holes import fill_holes as fill_holes_command
from lsp_server.features.fill_holes import holes_near
from lsp_server.runtime import DiffillServer
from lsp_server.settings import SECTION

log = logging.getLogger(__name__)

# Completion fallback triggers, besides the identifier characters editors send anyway.
_TRIGGER_CHARACTERS = [".", "(", "[", "{", ",", "=", ":", " "]


def build_server(core_factory: CoreFactory = real_core_factory) -> DiffillServer:
    ls = guards.install(DiffillServer(core_factory))  # framing and "every request is answered"

    @ls.feature(types.INITIALIZE)
    def initialize(ls: DiffillServer, params: types.InitializeParams) -> None:
        options = params.initialization_options
        if isinstance(options, dict) and isinstance(options.get(SECTION), dict):
            options = options[SECTION]  # accept both {"diffill": {...}} and {...}
        ls.update_settings(options, "initializationOptions")

    @ls.feature(types.INITIALIZED)
    async def initialized(ls: DiffillServer, params: types.InitializedParams) -> None:
        await ls.pull_configuration()
        ls.core_start.allow()

    @ls.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    async def did_change_configuration(ls: DiffillServer, params: types.DidChangeConfigurationParams) -> None:
        data = params.settings
        if isinstance(data, dict) and SECTION in data:
            ls.update_settings(data[SECTION], "didChangeConfiguration")
        else:  # the pull model: settings is null or another section
            await ls.pull_configuration()
        ls.core_start.ensure()

    @ls.feature(types.SHUTDOWN)
    async def shutdown(ls: DiffillServer, params: Any) -> None:
        await ls.close_core()

    @ls.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: DiffillServer, params: types.DidOpenTextDocumentParams) -> None:
        d = params.text_document
        ls.opened(d.uri, d.language_id, d.version, d.text)

    @ls.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: DiffillServer, params: types.DidChangeTextDocumentParams) -> None:
        ls.changed(params.text_document.uri, params.text_document.version, conversions.changes(params.content_changes))

    @ls.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: DiffillServer, params: types.DidCloseTextDocumentParams) -> None:
        ls.closed(params.text_document.uri)

    @ls.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def inline_completion(ls: DiffillServer, params: types.InlineCompletionParams) -> types.InlineCompletionList | None:
        if not ls.settings.inline.enable:
            return None
        invoked = params.context.trigger_kind == types.InlineCompletionTriggerKind.Invoked
        uri, selected = params.text_document.uri, params.context.selected_completion_info
        if selected is not None:  # complete as if the selected item were applied
            r = selected.range
            answer = await ls.completion.complete_with_selected(uri, conversions.point(r.start), conversions.point(r.end),
                                                                selected.text, debounce=not invoked)
        else:
            answer = await ls.completion.complete(uri, *conversions.point(params.position), debounce=not invoked)
        if answer is None:
            return types.InlineCompletionList(items=[])
        n = ls.settings.inline.max_items if invoked else 1
        return conversions.inline_list(answer.doc, answer.outcome.candidates, ls.encoding, n, answer.accept_ids,
                                   selected=selected)

    @ls.feature(
        types.TEXT_DOCUMENT_COMPLETION,
        types.CompletionOptions(trigger_characters=_TRIGGER_CHARACTERS, resolve_provider=False),
    )
    async def completion(ls: DiffillServer, params: types.CompletionParams) -> types.CompletionList | None:
        if not ls.settings.completion.enable:
            return None
        invoked = params.context is None or params.context.trigger_kind == types.CompletionTriggerKind.Invoked
        answer = await ls.completion.complete(params.text_document.uri, *conversions.point(params.position),
                                              debounce=not invoked)
        if answer is None:
            return types.CompletionList(is_incomplete=True, items=[])
        return conversions.completion_list(answer.doc, answer.outcome.candidates, answer.cursor, ls.encoding)

    @ls.feature(
        types.TEXT_DOCUMENT_CODE_ACTION,
        types.CodeActionOptions(code_action_kinds=[types.CodeActionKind.RefactorRewrite]),
    )
    def code_action(ls: DiffillServer, params: types.CodeActionParams) -> list[types.CodeAction] | None:
        entry = ls.usable(params.text_document.uri)
        if entry is None:
            return None
        here, count = holes_near(ls, entry.doc, conversions.point(params.range.start), conversions.point(params.range.end))
        return conversions.code_actions(params.text_document.uri, params.range, here, count) or None

    @ls.command(conversions.COMMAND_FILL_HOLES)
    async def fill_holes(ls: DiffillServer, *args: Any) -> dict:
        return await fill_holes_command(ls, list(args))

    @ls.command(conversions.COMMAND_ACCEPTED)
    def accepted(ls: DiffillServer, *args: Any) -> bool:
        return bool(args) and ls.feedback.accepted(str(args[0]))

    @ls.feature(conversions.STATUS_METHOD)
    async def status(ls: DiffillServer, params: Any) -> dict:
        return await status_feature.status(ls)

    return ls


def _stop(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # until the server's loop installs its own: a clean stop, no traceback


def main(argv: list[str] | None = None) -> int:
    """``diffill lsp [--model FOLDER] [--device D] [--tcp HOST:PORT]``: serve LSP over
    stdio (or TCP to debug). Exit code: 0, or 1 for `exit` without `shutdown`."""
    # Before any work: SIGINT/SIGTERM while starting up ends the process without a
    # traceback; once serving, guards.start_io closes the core first.
    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _main(argv)
    except KeyboardInterrupt:
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(
        prog="diffill lsp", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="The diffill language server: inline completions, completion items and hole filling for an "
                    "editor,\nover LSP on stdio. Editors start it themselves (see editors/).",
        epilog="examples:\n  diffill lsp                         what an editor runs\n"
               "  diffill lsp --model ~/models/Dream-Coder-v0-Instruct-7B --device cuda\n"
               "                                      for an editor configured by command line\n"
               "  diffill lsp --tcp 127.0.0.1:2087    listen on TCP to debug a client")
    parser.add_argument("--tcp", metavar="HOST:PORT", help="listen on TCP instead of stdio (debugging)")
    parser.add_argument("--model", metavar="FOLDER",
                        help="model folder used while the model.path setting is empty (the default)")
    parser.add_argument("--device", help="cpu | cuda | cuda:N | mps, used while the model.device setting is auto")
    parser.add_argument("--weights", choices=WEIGHTS_SCHEMES,
                        help="int4 | int8 | float32, used while the model.weights setting is auto")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads of the private core, used while the core.threads setting is 0 "
                             "(default 0: chosen per kind of work by measurement)")
    parser.add_argument("--log-level", default="WARNING", help="stderr log level (default WARNING)")
    args = parser.parse_args(argv)
    if not 0 <= args.threads <= 1024:
        print(f"diffill lsp: --threads {args.threads}: want 0 (chosen by measurement) or a thread count 1-1024",
              file=sys.stderr)
        return 2
    model_path = str(Path(args.model).expanduser().resolve()) if args.model else ""
    logging.basicConfig(stream=sys.stderr, level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # pygls logs every message body at INFO: far too much for a 10 MB document.
    logging.getLogger("pygls").setLevel(max(logging.WARNING, logging.getLogger().level))
    server = build_server()
    server.set_model_defaults(model_path, args.device or "", args.weights or "")
    server.set_threads_default(args.threads)
    if args.tcp:
        host, _, port = args.tcp.rpartition(":")
        if not host or not port.isdigit():
            print(f"diffill lsp: --tcp wants HOST:PORT, got {args.tcp!r}", file=sys.stderr)
            return 2
        server.start_tcp(host, int(port))
        return 0
    return server.start_io()
