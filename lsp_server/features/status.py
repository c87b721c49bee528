"""``diffill/status``: what the server and its core are doing, as one JSON object.

Owns: the status answer (server, the core's state and its own status, model, device,
queues, counters, latency, cache, per-document costs, warm-ups, the effective settings
with the shared-core token hidden). The fields are described in docs/lsp.md.

Must not know: how the core is reached beyond ``core_link``, torch.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from lsp_server import settings as settings_mod
from lsp_server.core_client import CoreState

if TYPE_CHECKING:
    from lsp_server.runtime import DiffillServer


def _settings_shown(ls: DiffillServer) -> dict:
    """The effective settings as the user writes them, the shared-core token hidden."""
    shown = settings_mod.to_editor_json(ls.settings)
    if shown["core"]["token"]:
        shown["core"]["token"] = "<set>"
    return shown


async def core_status(ls: DiffillServer) -> dict:
    """The core's state (``CoreState``), and its own status when it is connected."""
    link = ls.link
    core: dict = {"state": link.state.value}
    if link.error:
        core["error"] = link.error
    if link.state in (CoreState.READY, CoreState.UNRESPONSIVE):
        try:
            conn = await asyncio.wait_for(link.connection(), timeout=1)
            core.update(await asyncio.wait_for(conn.status(), timeout=5))
            core["state"] = link.state.value  # an answer in time makes an unresponsive core ready
        except Exception as exc:  # e.g. a SIGSTOPped core: connected, never "ready"
            core["state"], core["error"] = CoreState.UNRESPONSIVE.value, str(exc) or type(exc).__name__
    return core


async def status(ls: DiffillServer) -> dict:
    core = await core_status(ls)
    completion = ls.completion
    info = core.get("info") if isinstance(core.get("info"), dict) else {}
    sched = core.get("scheduler") if isinstance(core.get("scheduler"), dict) else {}
    summary = ls.stats.summary()
    summary["counters"]["superseded"] = completion.latest.superseded
    summary["counters"]["offscreen"] = completion.focus.dropped
    windows = completion.windows
    return {
        "server": {"name": "diffill", "version": ls.version, "encoding": ls.encoding, "documents": len(ls.docs)},
        "core": core,
        "model": info.get("model"),
        "device": info.get("device"),
        "weights": info.get("weights"),
        "queue": {"inFlight": completion.latest.in_flight(), "core": sched.get("waiting"), "active": sched.get("active")},
        **summary,
        "cache": {"hits": completion.cache.hits, "misses": completion.cache.misses},
        "documents": [{"uri": uri, **d, **windows.summary(uri)} for uri, d in completion.doc_stats.items()],
        "warmups": {"started": windows.warmups, "finished": windows.warmed},
        "settings": _settings_shown(ls),
    }
