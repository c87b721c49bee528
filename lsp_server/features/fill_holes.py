"""Filling holes and regenerating a selection: the ``diffill.fillHoles`` command and the
code actions that offer it.

Owns: reading the command arguments, choosing the plans (every hole; the hole under
a range; a selection to regenerate), one joint core fill, and the version-checked
``workspace/applyEdit``. If the document changed while the model ran, nothing is
applied and the user is told; a failed core request is told once.

Arguments: ``[uri]`` fills every hole; ``[uri, range]`` the holes overlapping
``range``; ``[uri, range, "regenerate"]`` regenerates the selected text. The result is
``{"filled": N}`` (plus ``"applied": false`` and a ``"reason"`` when nothing was); a
hole whose fill post-processes to nothing is left as it was and not counted.

Progress: while the core works the user sees a ``$/progress`` bar (when the client
has ``window.workDoneProgress``) fed by the core's heartbeats (hole k of n, context
tokens encoded, tokens written). There is no deadline: the fill runs as long as the
core's heartbeats say it is working (core_client).

Must not know: torch, how results are built (conversions.py), how the core is reached (core_link).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable

from lsprotocol import types

from grammars.holes import find_holes
from grammars.planner import plan
from lsp_server import conversions, pipeline
from lsp_server.core_link import CORE_ERRORS

log = logging.getLogger(__name__)


def _position(value: Any) -> tuple[int, int] | None:
    if isinstance(value, dict) and all(type(value.get(k)) is int and value[k] >= 0 for k in ("line", "character")):
        return value["line"], value["character"]
    return None


def _range(value: Any) -> tuple[tuple[int, int], tuple[int, int]] | None:
    if not isinstance(value, dict):
        return None
    start, end = _position(value.get("start")), _position(value.get("end"))
    return (start, end) if start and end else None


def choose_plans(ls: Any, doc: Any, args: list) -> list:
    rng = _range(args[1]) if len(args) > 1 else None
    if len(args) > 2 and args[2] == "regenerate":
        if rng is None:
            return []
        p = plan(doc, rng[1][0], rng[1][1], encoding=ls.encoding, selection=rng, marker=ls.settings.hole_marker)
        return [p] if p is not None else []
    holes = find_holes(doc, marker=ls.settings.hole_marker)
    if rng is None:
        return holes
    lo = doc.offset_at(*rng[0], encoding=ls.encoding)
    hi = doc.offset_at(*rng[1], encoding=ls.encoding)
    if lo is None or hi is None:
        return []
    return [h for h in holes if h.start_byte <= hi and lo <= h.end_byte]


def holes_near(ls: Any, doc: Any, start: tuple[int, int], end: tuple[int, int]) -> tuple[bool, int]:
    """(a hole overlaps start..end, holes in the document): what the code actions offer."""
    holes = find_holes(doc, marker=ls.settings.hole_marker)
    lo = doc.offset_at(*start, encoding=ls.encoding)
    hi = doc.offset_at(*end, encoding=ls.encoding)
    here = lo is not None and hi is not None and any(h.start_byte <= hi and lo <= h.end_byte for h in holes)
    return here, len(holes)


async def fill_holes(ls: Any, args: list) -> dict:
    """The command: ``run_fill_holes``, a failed core request told once and answered with its error."""
    try:
        return await run_fill_holes(ls, args)
    except CORE_ERRORS as exc:
        ls.tell_once(f"fill-error:{exc}", f"diffill: filling holes failed: {exc}", types.MessageType.Error)
        return {"filled": 0, "error": str(exc)}


async def run_fill_holes(ls: Any, args: list) -> dict:
    if not args or not isinstance(args[0], str):
        return {"filled": 0, "applied": False, "reason": "fillHoles wants [uri] or [uri, range]"}
    if len(args) > 1 and args[1] is not None and _range(args[1]) is None:  # never widen to the whole file
        return {"filled": 0, "applied": False, "reason": "fillHoles: the second argument is not a range"}
    uri = args[0]
    entry = ls.usable(uri)
    if entry is None:
        return {"filled": 0, "applied": False, "reason": f"{uri} is not an open document diffill serves"}
    version, doc = entry.version, entry.doc
    plans = choose_plans(ls, doc, args)
    if not plans:
        return {"filled": 0}
    ls.stats.count("fillHoles")
    token = await _progress_begin(ls, f"filling {len(plans)} hole{'s' if len(plans) != 1 else ''}")
    try:
        candidates = await pipeline.fill_plans(ls.link, doc, plans, ls.settings, request_id=f"lsp-{ls.protocol.msg_id}",
                                               on_progress=_reporter(ls, token))
    finally:
        if token is not None:
            ls.work_done_progress.end(token, types.WorkDoneProgressEnd(message="done"))
    if entry.version != version or ls.docs.get(uri) is not entry:
        reason = "the document changed while filling; nothing was applied"
        ls.window_show_message(types.ShowMessageParams(type=types.MessageType.Info, message=f"diffill: {reason}"))
        return {"filled": 0, "applied": False, "reason": reason}
    # A hole whose fill post-processed to nothing is left as it was (it can be retried).
    candidates = [c for c in candidates if c.text.strip()]
    if not candidates:
        return {"filled": 0}
    edit = conversions.workspace_edit(doc, uri, version, candidates, ls.encoding)
    reply = await ls.workspace_apply_edit_async(types.ApplyWorkspaceEditParams(edit=edit, label="diffill: fill holes"))
    if not getattr(reply, "applied", False):
        reason = getattr(reply, "failure_reason", None) or "the editor refused the edit"
        ls.window_show_message(types.ShowMessageParams(type=types.MessageType.Info, message=f"diffill: {reason}"))
        return {"filled": 0, "applied": False, "reason": reason}
    return {"filled": len(candidates)}


async def _progress_begin(ls: Any, title: str) -> str | None:
    """A $/progress bar for this fill, or None when the client cannot show one."""
    caps = ls.client_capabilities
    if not (caps and caps.window and caps.window.work_done_progress):
        return None
    token = f"diffill/fillHoles/{time.monotonic_ns()}"
    try:
        await asyncio.wait_for(ls.work_done_progress.create_async(token), timeout=5)
    except Exception as exc:
        log.warning("progress create failed: %s", exc)
        return None
    ls.work_done_progress.begin(token, types.WorkDoneProgressBegin(title="diffill", message=title, percentage=0,
                                                                   cancellable=False))
    return token


def progress_message(p: dict) -> tuple[str, int]:
    """(message, percentage) of one core heartbeat (protocol docstring)."""
    holes = max(1, int(p.get("holes") or 1))
    hole = min(holes - 1, max(0, int(p.get("hole") or 0)))
    where = f"hole {hole + 1}/{holes}: " if holes > 1 else ""
    phase = p.get("phase")
    context = max(1, int(p.get("context") or 1))
    encoded = min(context, int(p.get("encoded") or 0))
    if phase == "queued":
        return "waiting for the core", 0
    if phase == "encoding":
        done = 0.5 * encoded / context
        message = f"{where}reading the context, {encoded}/{context} tokens"
    else:
        done = 0.5 + 0.5 * min(1.0, int(p.get("steps") or 0) / 64)
        message = f"{where}{int(p.get('tokens') or 0)} tokens written"
    return message, int(100 * (hole + done) / holes)


def _reporter(ls: Any, token: str | None) -> Callable[[dict], None] | None:
    if token is None:
        return None

    def report(p: dict) -> None:
        message, percentage = progress_message(p)
        ls.work_done_progress.report(token, types.WorkDoneProgressReport(message=message, percentage=percentage))

    return report
