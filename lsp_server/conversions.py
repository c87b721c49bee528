"""Every conversion between lsprotocol types and the server's plain data, both ways.

Owns: LSP inputs as plain tuples (content changes, positions and ranges as (line,
character)), and every lsprotocol result the server sends, built from byte-offset
candidates: InlineCompletionItems, CompletionItems, versioned WorkspaceEdits and
CodeActions, in the negotiated position encoding. This is the one module that converts
between lsprotocol types and the server's plain data; handlers in server.py only call it.

Must not know: the core, settings parsing, grammars internals (it uses only
``doc.position_at`` from the grammars contract).
"""

from __future__ import annotations

from typing import Any, Sequence

from lsprotocol import types

from lsp_server.pipeline import Candidate

COMMAND_FILL_HOLES = "diffill.fillHoles"
COMMAND_ACCEPTED = "diffill.accepted"  # run by the editor when an inline item is accepted
STATUS_METHOD = "diffill/status"

# Longest completion-item label: the label is a preview, the edit carries the fill.
_LABEL_CHARS = 60


def point(pos: types.Position) -> tuple[int, int]:
    return pos.line, pos.character


def changes(content_changes: Sequence[Any]) -> list[tuple[tuple[int, int] | None, tuple[int, int] | None, str]]:
    """didChange content changes as (start, end, text); (None, None, text) replaces all."""
    out = []
    for c in content_changes:
        rng = getattr(c, "range", None)
        out.append((None, None, c.text) if rng is None else (point(rng.start), point(rng.end), c.text))
    return out


def position(doc: Any, byte: int, encoding: str) -> types.Position:
    line, character = doc.position_at(byte, encoding=encoding)
    return types.Position(line=line, character=character)


def lsp_range(doc: Any, start: int, end: int, encoding: str) -> types.Range:
    return types.Range(start=position(doc, start, encoding), end=position(doc, end, encoding))


def inline_list(
    doc: Any,
    candidates: Sequence[Candidate],
    encoding: str,
    max_items: int,
    accept_ids: Sequence[str] = (),
    selected: types.SelectedCompletionInfo | None = None,
) -> types.InlineCompletionList:
    """Inline items, best first. The range of an item must lie on one line (LSP
    3.18), so a fill replacing text across lines is left out; its insert text may
    span lines. With ``selected`` (the editor's selectedCompletionInfo) the item
    covers its range and starts with its text; the candidates were then made on a
    copy of ``doc`` with the selection applied, and only insertions are kept."""
    items: list[types.InlineCompletionItem] = []
    for i, c in enumerate(candidates[:max_items]):
        rng = lsp_range(doc, c.start, c.end, encoding)
        if rng.start.line != rng.end.line:
            continue
        text = c.text
        if selected is not None:
            if c.start != c.end:
                continue
            rng, text = selected.range, selected.text + c.text
        command = None
        if i < len(accept_ids):
            command = types.Command(title="diffill: accepted", command=COMMAND_ACCEPTED, arguments=[accept_ids[i]])
        items.append(types.InlineCompletionItem(insert_text=text, range=rng, command=command))
    return types.InlineCompletionList(items=items)


def completion_list(doc: Any, candidates: Sequence[Candidate], cursor: int, encoding: str) -> types.CompletionList:
    """The completion fallback: one item carrying the best fill. Its edit range must
    be on one line and contain the cursor; the list is incomplete so the editor asks
    again after each keystroke (the fill depends on the exact prefix)."""
    items = []
    for c in candidates[:1]:
        rng = lsp_range(doc, c.start, c.end, encoding)
        if rng.start.line != rng.end.line or not (c.start <= cursor <= c.end):
            continue
        typed = doc.source[c.start : cursor].decode("utf-8", "replace")
        first = c.text.split("\n", 1)[0].strip() or c.text.strip()
        label = first if len(first) <= _LABEL_CHARS else first[: _LABEL_CHARS - 1] + "…"
        items.append(
            types.CompletionItem(
                label=label or "(fill)",
                kind=types.CompletionItemKind.Snippet,
                detail="diffill",
                documentation=types.MarkupContent(kind=types.MarkupKind.PlainText, value=c.text),
                filter_text=typed + c.text,
                sort_text="0",
                preselect=True,
                insert_text_format=types.InsertTextFormat.PlainText,
                text_edit=types.TextEdit(range=rng, new_text=c.text),
            )
        )
    return types.CompletionList(is_incomplete=True, items=items)


def workspace_edit(doc: Any, uri: str, version: int, candidates: Sequence[Candidate], encoding: str) -> types.WorkspaceEdit:
    """One versioned TextDocumentEdit: the client refuses it if the document moved on."""
    edits: list[types.TextEdit | types.AnnotatedTextEdit | types.SnippetTextEdit] = [
        types.TextEdit(range=lsp_range(doc, c.start, c.end, encoding), new_text=c.text) for c in candidates
    ]
    ident = types.OptionalVersionedTextDocumentIdentifier(uri=uri, version=version)
    return types.WorkspaceEdit(document_changes=[types.TextDocumentEdit(text_document=ident, edits=edits)])


def code_actions(uri: str, rng: types.Range, has_hole_here: bool, n_holes: int) -> list[types.CodeAction]:
    """'Fill hole', 'Fill all holes' and 'Regenerate selection'; all run fillHoles."""
    actions: list[types.CodeAction] = []
    selection = rng.start != rng.end
    if has_hole_here:
        actions.append(_action("Fill hole", [uri, _range_json(rng)]))
    if n_holes > 1 or (n_holes == 1 and not has_hole_here):
        actions.append(_action("Fill all holes", [uri]))
    if selection:
        actions.append(_action("Regenerate selection", [uri, _range_json(rng), "regenerate"]))
    return actions


def _action(title: str, arguments: list) -> types.CodeAction:
    return types.CodeAction(
        title=f"diffill: {title}",
        kind=types.CodeActionKind.RefactorRewrite,
        command=types.Command(title=title, command=COMMAND_FILL_HOLES, arguments=arguments),
    )


def _range_json(rng: types.Range) -> dict:
    return {
        "start": {"line": rng.start.line, "character": rng.start.character},
        "end": {"line": rng.end.line, "character": rng.end.character},
    }
