"""Latency benchmark through LSP: replay typing a Python file into `diffill lsp`.

    diffill bench typing [--file F] [--model DIR | --tiny] [--lines 300]
                                      [--typed-lines 30] [--key-ms 60] [--pause-ms 600]
    diffill bench typing --rhythm human [--places 10] [--buffers 3] [--seed 0]

``--rhythm human`` (issue 25 item 5) types as a person does: at each of ``--places``
code lines spread over the file the cursor arrives (a *jump* from another function, or a
*move* within the one it was in), the line is blanked and retyped in bursts of 2-8 keys
80-200 ms apart with pauses of 300-1,500 ms between them. It reports what the user sees:
the time from each pause's last key to ghost text (p50/p95), how many pauses of 500 ms
or more got ghost text before the next key, the first ghost text after opening the file
(its first request is waited for, however long it takes),
and per answered pause the context tokens the core encoded and the share it reused
(``diffill/status`` documents). ``--buffers 3`` opens two more standard-library files
and sends, with every request, one for each of them at the same position, as Neovim
0.12-dev does (one request per open buffer, the active window's cursor).

Owns: driving the real server over stdio as an editor would while typing: for each
keystroke a ``didChange`` then an automatic ``textDocument/inlineCompletion``, with a
``$/cancelRequest`` for the previous request still pending (as VS Code does); a pause
at the end of each line. The file (the first ``--lines`` lines of ``--file``, by
default the standard library's ``textwrap.py``) is opened whole; ``--typed-lines``
lines spread over it are blanked and retyped character by character, so every
keystroke sees the real code before and after the cursor.

Prints a table, then one JSON line last: latency p50/p95 of answered requests (ms,
from send to answer), answered / cancelled / empty counts and cache hits.

Must not know: server internals (it speaks LSP and reads ``diffill/status``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcRequestCancelled
from pygls.lsp.client import LanguageClient

from diffusion_core.protocol import percentile

URI = "file:///bench/typed.py"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="diffill bench typing", description=__doc__.split("\n")[0],
                                epilog="example:\n  diffill bench typing --tiny --typed-lines 5",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--file", type=Path, default=Path(textwrap.__file__), help="Python file to replay")
    p.add_argument("--lines", type=int, default=300, help="lines of the file to use")
    p.add_argument("--typed-lines", type=int, default=30, help="lines retyped character by character")
    p.add_argument("--key-ms", type=float, default=60.0, help="time between keystrokes")
    p.add_argument("--pause-ms", type=float, default=1500.0, help="pause at the end of a typed line")
    p.add_argument("--model", default="", help="model folder or .gguf file (default: Qwen2.5-Coder-0.5B from its weight wheels)")
    p.add_argument("--tiny", action="store_true", help="use a tiny random model (smoke run, not a figure)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--prefix-bytes", type=int, default=None, help="override context.prefixBytes")
    p.add_argument("--debounce-max-ms", type=int, default=None, help="override the server's adaptive debounce cap")
    p.add_argument("--rhythm", choices=("steady", "human"), default="steady",
                   help="steady: one key every --key-ms, a --pause-ms pause per line; human: bursts and pauses")
    p.add_argument("--places", type=int, default=10, help="human: code lines the cursor goes to and retypes")
    p.add_argument("--buffers", type=int, default=1, help="human: open buffers, each asked on every request (Neovim)")
    p.add_argument("--seed", type=int, default=0, help="human: the rhythm's random seed")
    p.add_argument("--threads", type=int, default=None, help="override core.threads")
    p.add_argument("--cold-prefix-bytes", type=int, default=None, help="override context.coldPrefixBytes")
    return p.parse_args(argv)


def typed_line_numbers(lines: list[str], n: int) -> list[int]:
    """``n`` code lines (not blank, not comments, not docstring lines) spread evenly."""
    in_doc = False
    candidates = []
    for i, line in enumerate(lines):
        s = line.strip()
        quotes = s.count('"""') + s.count("'''")
        if quotes % 2 == 1:
            in_doc = not in_doc
            continue
        if s and not in_doc and not quotes and not s.startswith("#"):
            candidates.append(i)
    if not candidates:
        return []
    step = max(1, len(candidates) // max(1, n))
    return candidates[::step][:n]


class Replay:
    def __init__(self, client: LanguageClient) -> None:
        self.client = client
        self.version = 1
        self.latencies: list[float] = []
        self.pause_latencies: list[float] = []
        self.finished_latencies: list[float] = []  # answered or empty: the core ran to the end
        self.counts = {"requests": 0, "answered": 0, "cancelled": 0, "empty": 0, "errors": 0}
        self.pending: tuple[str, asyncio.Task] | None = None
        self._next = 0

    def change(self, line: int, char: int, end_char: int, text: str) -> None:
        self.version += 1
        rng = types.Range(start=types.Position(line, char), end=types.Position(line, end_char))
        self.client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=URI, version=self.version),
            content_changes=[types.TextDocumentContentChangePartial(range=rng, text=text)],
        ))

    def request(self, line: int, char: int, at_pause: bool) -> asyncio.Task:
        if self.pending is not None and not self.pending[1].done():
            self.client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=self.pending[0]))
        self._next += 1
        msg_id = f"bench-{self._next}"
        params = types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=URI), position=types.Position(line, char),
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic),
        )
        task = asyncio.ensure_future(self._timed(msg_id, params, at_pause))
        self.pending = (msg_id, task)
        return task

    async def _timed(self, msg_id: str, params: types.InlineCompletionParams, at_pause: bool) -> None:
        self.counts["requests"] += 1
        t0 = time.perf_counter()
        try:
            result = await self.client.protocol.send_request_async(
                types.TEXT_DOCUMENT_INLINE_COMPLETION, params, msg_id=msg_id
            )
        except JsonRpcRequestCancelled:
            self.counts["cancelled"] += 1
            return
        except JsonRpcException:
            self.counts["errors"] += 1
            return
        ms = (time.perf_counter() - t0) * 1000
        self.finished_latencies.append(ms)
        if result is None or not result.items:
            self.counts["empty"] += 1
            return
        self.counts["answered"] += 1
        self.latencies.append(ms)
        if at_pause:
            self.pause_latencies.append(ms)


def editor_settings(args: argparse.Namespace) -> dict[str, Any]:
    init: dict[str, Any] = {"model": {"path": args.model, "device": args.device}, "fill": {"maxTokens": args.max_tokens},
                            "feedback": {"enable": False}, "context": {}}
    if args.prefix_bytes is not None:
        init["context"].update(prefixBytes=args.prefix_bytes, suffixBytes=max(0, args.prefix_bytes // 3))
    if args.cold_prefix_bytes is not None:
        init["context"]["coldPrefixBytes"] = args.cold_prefix_bytes
    if args.debounce_max_ms is not None:
        init["debounce"] = {"maxMs": args.debounce_max_ms}
    if args.threads is not None:
        init["core"] = {"threads": args.threads}
    return init


async def start_server(args: argparse.Namespace) -> tuple[LanguageClient, asyncio.Task, float]:
    """`diffill lsp` started, initialized and its core ready: (client, stderr drain, load s)."""
    init = editor_settings(args)
    client = LanguageClient("diffill-bench", "0.1")
    await client.start_io(sys.executable, "-m", "diffill", "lsp", env=dict(os.environ))
    stderr_tail: list[bytes] = []

    async def drain() -> None:  # the server's stderr must not fill its pipe
        assert client._server is not None and client._server.stderr is not None
        while line := await client._server.stderr.readline():
            stderr_tail[:] = (stderr_tail + [line])[-20:]

    drain_task = asyncio.ensure_future(drain())
    caps = types.ClientCapabilities(text_document=types.TextDocumentClientCapabilities(
        inline_completion=types.InlineCompletionClientCapabilities()))
    await client.initialize_async(types.InitializeParams(capabilities=caps, initialization_options=init))
    client.initialized(types.InitializedParams())
    t_load = time.perf_counter()
    while True:
        st = await client.protocol.send_request_async("diffill/status", {})
        state = st.core.state
        if state in ("ready", "failed"):
            break
        await asyncio.sleep(0.1)
    load_s = time.perf_counter() - t_load
    if state != "ready":
        raise SystemExit(f"bench: core failed to start: {getattr(st.core, 'error', '?')}")
    return client, drain_task, load_s


async def run(args: argparse.Namespace) -> dict[str, Any]:
    lines = args.file.read_text(encoding="utf-8").splitlines()[: args.lines]
    typed = typed_line_numbers(lines, args.typed_lines)
    client, drain_task, load_s = await start_server(args)
    replay = Replay(client)
    client.text_document_did_open(types.DidOpenTextDocumentParams(text_document=types.TextDocumentItem(
        uri=URI, language_id="python", version=1, text="\n".join(lines) + "\n")))
    # warm-up (excluded): one request at the first typed line's end
    if typed:
        await replay.request(typed[0], len(lines[typed[0]]), at_pause=False)
        replay.latencies.clear(), replay.pause_latencies.clear(), replay.finished_latencies.clear()
        replay.counts = dict.fromkeys(replay.counts, 0)
    key_s, pause_s = args.key_ms / 1000, args.pause_ms / 1000
    t_start = time.perf_counter()
    for ln in typed:
        target = lines[ln]
        indent = len(target) - len(target.lstrip())
        replay.change(ln, indent, len(target), "")  # blank the line (keep its indentation)
        for col in range(indent, len(target)):
            replay.change(ln, col, col, target[col])
            replay.request(ln, col + 1, at_pause=col + 1 == len(target))
            await asyncio.sleep(key_s)
        await asyncio.sleep(pause_s)
    if replay.pending is not None:
        await asyncio.wait_for(replay.pending[1], 60)
    wall_s = time.perf_counter() - t_start
    st = await client.protocol.send_request_async("diffill/status", {})
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()
    drain_task.cancel()
    counters = st.counters._asdict() if hasattr(st.counters, "_asdict") else dict(st.counters)
    core_counters = {}
    try:
        cc = st.core.scheduler.counters
        core_counters = cc._asdict() if hasattr(cc, "_asdict") else dict(cc)
    except AttributeError:
        pass
    stages = {name: getattr(getattr(st.stagesMs, name, None), "p50", None) for name in ("plan_ms", "core_ms", "post_ms")}
    return {
        "bench": "lsp_typing",
        "model": getattr(st, "model", None) or args.model or "default",
        "device": args.device,
        "file": str(args.file), "lines": len(lines), "typed_lines": len(typed),
        "keystrokes": replay.counts["requests"], "key_ms": args.key_ms, "pause_ms": args.pause_ms,
        "p50_ms": _round(percentile(replay.latencies, 50)), "p95_ms": _round(percentile(replay.latencies, 95)),
        "finished_p50_ms": _round(percentile(replay.finished_latencies, 50)),
        "finished_p95_ms": _round(percentile(replay.finished_latencies, 95)),
        "pause_p50_ms": _round(percentile(replay.pause_latencies, 50)),
        "pause_p95_ms": _round(percentile(replay.pause_latencies, 95)),
        **{k: v for k, v in replay.counts.items() if k != "requests"},
        "cache_hits": counters.get("cacheHits", 0), "superseded": counters.get("superseded", 0),
        "no_plan": counters.get("noPlan", 0), "empty_fill": counters.get("emptyFill", 0),
        **{f"{name[:-3]}_p50_ms": _round(v) for name, v in stages.items()},
        "core_submitted": core_counters.get("submitted"), "core_cancelled": core_counters.get("cancelled"),
        "core_completed": core_counters.get("completed"),
        "core_load_s": round(load_s, 2), "wall_s": round(wall_s, 1),
        "machine": f"{platform.machine()} {os.cpu_count()} cpu, python {platform.python_version()}",
        "command": "diffill bench typing " + " ".join(sys.argv[1:]),
    }


# An answer faster than this came from the server's typed-ahead cache, not the model.
MODEL_MS = 50.0

# Other standard-library files opened beside --file for --buffers (Neovim's per-buffer requests).
OTHER_BUFFERS = ("shlex", "fnmatch", "glob", "bisect")


class HumanReplay:
    """One editor window typing in URI while --buffers - 1 other buffers are open: every
    request goes out for each open buffer at the same position (Neovim 0.12-dev), the
    previous one of each cancelled (VS Code's $/cancelRequest)."""

    def __init__(self, client: LanguageClient, others: list[str], rng) -> None:
        self.client, self.others, self.rng = client, others, rng
        self.version = 1
        self.pending: dict[str, tuple[str, asyncio.Task]] = {}
        self.records: dict[str, dict] = {}  # msg id -> {"sent", "answered" (s or None), "items", "uri"}
        self._next = 0

    def change(self, line: int, char: int, end_char: int, text: str) -> None:
        self.version += 1
        rng = types.Range(start=types.Position(line, char), end=types.Position(line, end_char))
        self.client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=URI, version=self.version),
            content_changes=[types.TextDocumentContentChangePartial(range=rng, text=text)]))

    def request(self, line: int, char: int) -> str:
        """Requests for every open buffer (in an order that changes), URI's id returned."""
        uris = [URI, *self.others]
        self.rng.shuffle(uris)
        mine = ""
        for uri in uris:
            old = self.pending.get(uri)
            if old is not None and not old[1].done():
                self.client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=old[0]))
            self._next += 1
            msg_id = f"human-{self._next}"
            rec = self.records[msg_id] = {"sent": time.perf_counter(), "answered": None, "items": 0, "uri": uri}
            params = types.InlineCompletionParams(
                text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line, char),
                context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic))
            self.pending[uri] = (msg_id, asyncio.ensure_future(self._send(msg_id, params, rec)))
            if uri == URI:
                mine = msg_id
        return mine

    async def _send(self, msg_id: str, params: types.InlineCompletionParams, rec: dict) -> None:
        try:
            result = await self.client.protocol.send_request_async(types.TEXT_DOCUMENT_INLINE_COMPLETION, params,
                                                                   msg_id=msg_id)
        except JsonRpcRequestCancelled:
            rec["cancelled"] = True
            return
        except JsonRpcException:
            rec["error"] = True
            return
        rec["answered"] = time.perf_counter()
        rec["items"] = len(result.items) if result is not None else 0

    async def document(self) -> dict:
        st = await self.client.protocol.send_request_async("diffill/status", {})
        for d in st.documents:
            if d.uri == URI:
                return d._asdict() if hasattr(d, "_asdict") else dict(d)
        return {}


async def run_human(args: argparse.Namespace) -> dict[str, Any]:
    import random

    lines = args.file.read_text(encoding="utf-8").splitlines()[: args.lines]
    places = typed_line_numbers(lines, args.places)
    rng = random.Random(args.seed)
    client, drain_task, load_s = await start_server(args)
    load_start = os.getloadavg()
    others = []
    for name in OTHER_BUFFERS[: max(0, args.buffers - 1)]:
        mod = __import__(name)
        uri = f"file:///bench/{name}.py"
        others.append(uri)
        client.text_document_did_open(types.DidOpenTextDocumentParams(text_document=types.TextDocumentItem(
            uri=uri, language_id="python", version=1, text=Path(mod.__file__).read_text(encoding="utf-8"))))
    replay = HumanReplay(client, others, rng)
    t_open = time.perf_counter()
    client.text_document_did_open(types.DidOpenTextDocumentParams(text_document=types.TextDocumentItem(
        uri=URI, language_id="python", version=1, text="\n".join(lines) + "\n")))
    pauses: list[dict] = []  # per pause: kind, length, ghost ms (None: none before the next key)

    async def pause(kind: str, msg_id: str, seconds: float) -> None:
        await asyncio.sleep(seconds)
        rec = replay.records[msg_id]
        ghost = rec["answered"] - rec["sent"] if rec["answered"] is not None and rec["items"] else None
        entry = {"kind": kind, "pause_ms": round(seconds * 1000), "ghost_ms": None if ghost is None else round(ghost * 1000, 1),
                 "in_time": ghost is not None and ghost <= seconds,
                 # why there was none: answered empty (nothing to offer), or still running when the next key came
                 "outcome": "ghost" if ghost is not None else "empty" if rec["answered"] is not None else "late"}
        if ghost is not None:
            doc = await replay.document()
            entry.update(encoded=doc.get("encodedTokens"), context=doc.get("cachedTokens"), reuse=doc.get("reuse"),
                         window=doc.get("lastWindow"))
        pauses.append(entry)

    first_ghost_ms = None
    prev = None
    for n, ln in enumerate(places):
        target = lines[ln]
        indent = len(target) - len(target.lstrip())
        kind = "open" if n == 0 else "move" if prev is not None and abs(ln - prev) <= 15 else "jump"
        # The cursor arrives and the line is cleared to be retyped; the user looks: a pause.
        replay.change(ln, indent, len(target), "")
        msg = replay.request(ln, indent)
        if n == 0:  # the file was just opened: wait for its first answer, however long it takes
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(replay.pending[URI][1]), 300)
        await pause(kind, msg, rng.uniform(0.3, 1.5) if n else 0.0)
        if n == 0 and pauses[-1]["ghost_ms"] is not None:
            first_ghost_ms = round(pauses[-1]["ghost_ms"] + (replay.records[msg]["sent"] - t_open) * 1000, 1)
        col = indent
        while col < len(target):
            for _ in range(rng.randint(2, 8)):
                if col >= len(target):
                    break
                replay.change(ln, col, col, target[col])
                col += 1
                msg = replay.request(ln, col)
                if col < len(target):
                    await asyncio.sleep(rng.uniform(0.08, 0.2))
            await pause("typing", msg, rng.uniform(0.3, 1.5))
        prev = ln
    for _, task in replay.pending.values():
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 120)
    st = await client.protocol.send_request_async("diffill/status", {})
    load_end = os.getloadavg()
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()
    drain_task.cancel()
    return human_summary(args, pauses, first_ghost_ms, st, load_s, (load_start[0], load_end[0]))


def human_summary(args: argparse.Namespace, pauses: list[dict], first_ghost_ms: float | None, st: Any,
                  load_s: float, load: tuple[float, float]) -> dict[str, Any]:
    def ghost(kinds: tuple[str, ...]) -> list[float]:
        return [p["ghost_ms"] for p in pauses if p["kind"] in kinds and p["ghost_ms"] is not None]

    typing = [p for p in pauses if p["kind"] == "typing"]
    long = [p for p in pauses if p["pause_ms"] >= 500 and p["kind"] != "open"]
    answered = [p for p in pauses if p.get("encoded") is not None]
    outcomes = {k: sum(p["outcome"] == k for p in pauses) for k in ("ghost", "empty", "late")}
    counters = st.counters._asdict() if hasattr(st.counters, "_asdict") else dict(st.counters)
    return {
        "bench": "lsp_typing_human", "model": getattr(st, "model", None) or args.model or "default",
        "weights": getattr(st, "weights", None), "device": args.device, "file": str(args.file),
        "places": args.places, "buffers": args.buffers, "seed": args.seed, "pauses": len(pauses),
        "first_ghost_ms": first_ghost_ms,
        "typing_ghost_p50_ms": _round(percentile(ghost(("typing",)), 50)),
        "typing_ghost_p95_ms": _round(percentile(ghost(("typing",)), 95)),
        "typing_pauses": len(typing), "typing_pauses_with_ghost": len(ghost(("typing",))),
        # Typed-ahead cache answers take 1-20 ms here; these ran the model.
        "typing_model_ghost_p50_ms": _round(percentile([g for g in ghost(("typing",)) if g >= MODEL_MS], 50)),
        "typing_model_ghost_p95_ms": _round(percentile([g for g in ghost(("typing",)) if g >= MODEL_MS], 95)),
        "move_jump_ghost_p50_ms": _round(percentile(ghost(("move", "jump")), 50)),
        "move_jump_ghost_p95_ms": _round(percentile(ghost(("move", "jump")), 95)),
        "pause_outcomes": outcomes,
        "pauses_500ms": len(long), "pauses_500ms_in_time": sum(p["in_time"] for p in long),
        "pauses_500ms_in_time_share": round(sum(p["in_time"] for p in long) / len(long), 3) if long else None,
        "encoded_p50": percentile([p["encoded"] for p in answered], 50),
        "encoded_p95": percentile([p["encoded"] for p in answered], 95),
        "reuse_p50": percentile([p["reuse"] for p in answered], 50),
        "short_windows": sum(p.get("window") == "short" for p in answered),
        "requests": counters.get("requests"), "offscreen": counters.get("offscreen"),
        "cancelled": counters.get("cancelled"), "errors": counters.get("errors", 0),
        "core_load_s": round(load_s, 2), "load_start": round(load[0], 2), "load_end": round(load[1], 2),
        "machine": f"{platform.machine()} {os.cpu_count()} cpu, python {platform.python_version()}",
        "command": "diffill bench typing " + " ".join(sys.argv[1:]), "per_pause": pauses,
    }


def print_human(r: dict[str, Any]) -> None:
    print(f"diffill LSP typing replay, human rhythm: {r['places']} places in {r['file']}, {r['buffers']} buffer(s) "
          f"({r['model']}, weights {r['weights']}, {r['device']}; load {r['load_start']} -> {r['load_end']})")
    rows = [("first ghost text after open ms", r["first_ghost_ms"]),
            ("typing pause -> ghost p50 / p95 ms", f"{r['typing_ghost_p50_ms']} / {r['typing_ghost_p95_ms']}"),
            ("  of those that ran the model p50 / p95 ms", f"{r['typing_model_ghost_p50_ms']} / {r['typing_model_ghost_p95_ms']}"),
            ("typing pauses with ghost text", f"{r['typing_pauses_with_ghost']} of {r['typing_pauses']}"),
            ("move/jump -> ghost p50 / p95 ms", f"{r['move_jump_ghost_p50_ms']} / {r['move_jump_ghost_p95_ms']}"),
            ("pauses >= 500 ms in time", f"{r['pauses_500ms_in_time']} of {r['pauses_500ms']} ({r['pauses_500ms_in_time_share']})"),
            ("pauses: ghost / answered empty / late", " / ".join(str(r["pause_outcomes"][k]) for k in ("ghost", "empty", "late"))),
            ("tokens encoded per answer p50 / p95", f"{r['encoded_p50']} / {r['encoded_p95']}"),
            ("reuse p50", r["reuse_p50"]), ("answers on a short window", r["short_windows"]),
            ("requests / offscreen / cancelled / errors", f"{r['requests']} / {r['offscreen']} / {r['cancelled']} / {r['errors']}"),
            ("core load s", r["core_load_s"])]
    for name, value in rows:
        print(f"  {name:<42} {value}")


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if args.tiny:
            from .tiny_model import make_tiny_model

            args.model = str(make_tiny_model(Path(tmp) / "tiny"))
        result = asyncio.run(run_human(args) if args.rhythm == "human" else run(args))
    if args.rhythm == "human":
        print_human(result)
        print(json.dumps(result))
        return 0
    rows = [("keystrokes (requests)", result["keystrokes"]), ("answered", result["answered"]),
            ("cancelled (-32800)", result["cancelled"]), ("empty", result["empty"]),
            ("  of which no plan", result["no_plan"]), ("  of which fill cut empty", result["empty_fill"]),
            ("cache hits", result["cache_hits"]), ("p50 ms (answered)", result["p50_ms"]),
            ("p95 ms (answered)", result["p95_ms"]),
            ("p50 / p95 ms (answered or empty)", f"{result['finished_p50_ms']} / {result['finished_p95_ms']}"), ("p50 ms (at line-end pause)", result["pause_p50_ms"]),
            ("p95 ms (at line-end pause)", result["pause_p95_ms"]),
            ("server stages p50 ms", f"plan {result['plan_p50_ms']} / core {result['core_p50_ms']} / post {result['post_p50_ms']}"),
            ("core: submitted / cancelled / completed",
             f"{result['core_submitted']} / {result['core_cancelled']} / {result['core_completed']}"),
            ("core load s", result["core_load_s"])]
    print(f"diffill LSP typing replay: {result['typed_lines']} lines of {result['file']} "
          f"({result['model']}, {result['device']})")
    for name, value in rows:
        print(f"  {name:<28} {value}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
