"""Hostile-input measurements (issue 17): the figures docs/security.md quotes.

Owns: small experiments against real processes, each timed from outside:
  * recovery: a private core killed with -9, time until the next fill succeeds (median of
    5 kills; recovery_nostandby: the same without the client's standby core, 3 kills);
  * nesting: the LSP server (on the fake core of tests/lsp_server/fakes.py) answering
    inline completions inside 50k nested brackets, worst request;
  * huge: one 15 MB fill to a core, the core's peak RSS before and after;
  * stall: 4 token holders each stalling inside a 15 MiB frame, the core's RssAnon growth;
  * flood: a TCP core with 1,000 hostile connections open (idle and frame-trickling),
    a legitimate client's fill latency;
  * parent_death: an editor stand-in killed with -9 while its private core loads and while
    it serves, seconds until the core has exited (issue 22: the target is 1 s);
  * first_run, hostile_gguf: two editors opening at once on a fresh cache, a damaged cache
    rebuilt, hostile GGUF headers (issue 22 items 4-6; evaluation/hostile_cache.py).

Must not know: engine internals; it talks over the protocol and LSP as clients do.

    python -m evaluation.bench_hostile [--model DIR] [--only recovery,recovery_nostandby,nesting,huge,stall,flood,parent_death,first_run,hostile_gguf]

Without --model it uses the default model (Qwen2.5-Coder-0.5B). Prints a table, then one JSON line last.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from diffusion_core import protocol
from lsp_server.core_client import CoreClient

ROOT = Path(__file__).resolve().parents[1]
SEGMENTS = ["def add(a, b):\n    ", "\n"]


def _rss_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of a process in MB, from /proc."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def _mem_mb(pid: int) -> dict:
    """RssAnon (the process's own pages) and RssFile (mapped files, here the cached weights,
    shared through the page cache) of a process, in MB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("RssAnon", "RssFile"):
                out[key] = round(int(value.split()[0]) / 1024)
    return out


_PROBES = iter(range(1 << 30))


def _fresh() -> list[str]:
    """The probe fill under a text no core has seen, so no context is reused: a core that
    took over has none of the dead one's cached contexts, and the warm baseline must not
    either."""
    return [f"# probe {next(_PROBES)}\n" + SEGMENTS[0], SEGMENTS[1]]


async def _fill_s(client: CoreClient, budget: int) -> float:
    t0 = time.perf_counter()
    out = await client.fill(_fresh(), [budget], {})
    assert out.get("texts") and out["texts"][0], "the probe fill came back empty"
    return time.perf_counter() - t0


async def recovery(model: str | None, tries: int = 5, budget: int = 8, standby: bool = True) -> dict:
    """kill -9 of a private core, `tries` times: seconds until the next good completion.

    With the standby (the default client) each kill waits first until a standby is ready,
    as it is in an editor a while after any earlier crash; without it each kill meets a
    whole core start. Every probe is a text not seen before (`_fresh`), and the same kind of
    fill on a live, warm core is timed too: recovery minus that is what the crash itself
    costs (death noticed, takeover or restart, a process's first fill)."""
    tag = "recovery" if standby else "recovery_nostandby"
    died: list[float] = []
    client = CoreClient(model_dir=model, device="cpu", core_args=["--threads", "1"], backoff=(0.0, 1.0),
                        standby=standby, on_event=lambda kind, msg: died.append(time.perf_counter()) if kind == "died" else None)
    await client.start()

    async def standby_ready() -> None:
        while standby and not (client._standby and client._standby.conn and not client._standby.conn.lost):
            await asyncio.sleep(0.05)

    await _fill_s(client, budget)  # the first fill starts the standby: time the live core after it is up
    await standby_ready()
    warm = [await _fill_s(client, budget) for _ in range(3)]
    times, detect, mem = [], [], {}
    try:
        for _ in range(tries):
            await standby_ready()
            pid = client._proc.pid
            mem = {"live": _mem_mb(pid)}
            if standby:
                mem["standby"] = _mem_mb(client._standby.proc.pid)
            died.clear()
            probe = _fresh()
            os.kill(pid, signal.SIGKILL)
            t0 = time.perf_counter()
            while True:
                try:
                    out = await client.fill(probe, [budget], {})
                    if out.get("texts") and out["texts"][0]:
                        break
                except Exception:
                    await asyncio.sleep(0.02)
            times.append(time.perf_counter() - t0)
            detect.append((died[0] - t0) * 1e3 if died else float("nan"))
    finally:
        await client.close()
    warm_s = statistics.median(warm)
    rec = statistics.median(times)
    out = {f"{tag}_s": [round(t, 2) for t in times], f"{tag}_median_s": round(rec, 2),
           f"{tag}_max_s": round(max(times), 2), f"{tag}_warm_fill_s": round(warm_s, 2),
           f"{tag}_over_warm_median_s": round(rec - warm_s, 2),
           f"{tag}_death_seen_ms": round(statistics.median(detect), 1), f"{tag}_budget": budget}
    out.update({f"{tag}_{who}_{k}_mb": v for who, m in mem.items() for k, v in m.items()})
    return out


async def recovery_nostandby(model: str | None, budget: int = 8) -> dict:
    return await recovery(model, tries=3, budget=budget, standby=False)


def nesting(requests: int = 10, depth: int = 50_000) -> dict:
    sys.path.insert(0, str(ROOT))
    from tests.hostile.raw_lsp import RawLsp

    with tempfile.TemporaryDirectory() as tmp:
        lsp = RawLsp(Path(tmp))
        try:
            lsp.initialize()
            text = "x = " + "[" * depth + "]" * depth + "\n"
            t0 = time.perf_counter()
            lsp.send({"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {"textDocument": {
                "uri": "file:///nest.py", "languageId": "python", "version": 1, "text": text}}})
            assert lsp.alive(1)
            open_s = time.perf_counter() - t0
            times = []
            for i in range(requests):
                col = depth // 2 + 4 + i * 97
                t0 = time.perf_counter()
                lsp.request(100 + i, "textDocument/inlineCompletion", {
                    "textDocument": {"uri": "file:///nest.py"}, "position": {"line": 0, "character": col},
                    "context": {"triggerKind": 1}})
                reply = lsp.response(100 + i, timeout=300)
                assert reply is not None
                times.append((time.perf_counter() - t0) * 1e3)
                # a keystroke in between, so the next request is not served from the cache
                lsp.send({"jsonrpc": "2.0", "method": "textDocument/didChange", "params": {
                    "textDocument": {"uri": "file:///nest.py", "version": i + 2},
                    "contentChanges": [{"range": {"start": {"line": 0, "character": col},
                                                  "end": {"line": 0, "character": col}}, "text": " "}]}})
        finally:
            lsp.close()
    return {"nesting_open_s": round(open_s, 2), "nesting_p50_ms": round(statistics.median(times), 1),
            "nesting_worst_ms": round(max(times), 1)}


async def _start_core(model: str | None, where: str, extra: list[str] = (), env=None):
    cmd = [sys.executable, "-m", "diffusion_core.serving.service", "--device", "cpu", "--threads", "1",
           "--log-level", "WARNING", *where.split(), *extra]
    if model:
        cmd += ["--model", model]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env)
    return proc


async def _wait_client(address: str, token: str | None = None) -> CoreClient:
    deadline = time.monotonic() + 120
    while True:
        client = CoreClient(address=address, token=token)
        try:
            await client.start()
            return client
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def huge(model: str | None, mb: int = 15) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o700)
        sock = os.path.join(tmp, "core.sock")
        proc = await _start_core(model, f"--socket {sock}")
        try:
            client = await _wait_client(f"unix:{sock}")
            await client.fill(SEGMENTS, [8], {})
            before, _ = _rss_mb(proc.pid)
            line = "value = compute(value, 42)  # filler\n"
            big = line * (mb * 1024 * 1024 // len(line) // 2)
            t0 = time.perf_counter()
            out = await client.fill([big + SEGMENTS[0], SEGMENTS[1] + big], [8], {})
            fill_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            await client.fill(SEGMENTS, [8], {})
            small_after_ms = (time.perf_counter() - t0) * 1e3
            after, peak = _rss_mb(proc.pid)
            await client.close()
        finally:
            proc.terminate()
            proc.wait(10)
    return {"huge_input_mb": round(2 * len(big) / 1e6, 1), "huge_fill_s": round(fill_s, 2),
            "huge_rss_before_mb": round(before), "huge_rss_peak_mb": round(peak), "huge_rss_after_mb": round(after),
            "huge_context_tokens": out["stats"].get("context_tokens"), "small_fill_after_ms": round(small_after_ms, 1)}


def _tcp_setup(tmp: str) -> tuple[str, Path, int]:
    """(token, its 0600 token file in tmp, a free loopback port) for a TCP core."""
    import socket

    token = "bench-" + os.urandom(8).hex()
    tok = Path(tmp) / "token"
    tok.write_text(token)
    tok.chmod(0o600)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return token, tok, port


async def flood(model: str | None, hostile: int = 1000, fills: int = 10) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        token, tok, port = _tcp_setup(tmp)
        # prlimit: the same 1,024 descriptors the attack in issue 17 exhausted
        proc = await _start_core(model, f"--listen 127.0.0.1:{port} --token-file {tok}")
        try:
            subprocess.run(["prlimit", f"--pid={proc.pid}", "--nofile=1024:1024"], check=False)
            client = await _wait_client(f"tcp:127.0.0.1:{port}", token)
            await client.fill(SEGMENTS, [8], {})
            base = []
            for _ in range(fills):
                t0 = time.perf_counter()
                await client.fill(SEGMENTS, [8], {})
                base.append((time.perf_counter() - t0) * 1e3)
            conns = []
            opened = refused = 0
            for i in range(hostile):
                try:
                    r, w = await asyncio.open_connection("127.0.0.1", port)
                    conns.append((r, w))
                    opened += 1
                except OSError:
                    refused += 1

            async def trickle():
                for _ in range(40):
                    for _, w in conns[::2]:
                        if not w.is_closing():
                            w.write(protocol.encode(protocol.request(1, "nope", {})))
                    await asyncio.sleep(0.05)

            task = asyncio.create_task(trickle())
            under = []
            for _ in range(fills):
                t0 = time.perf_counter()
                await client.fill(SEGMENTS, [8], {})
                under.append((time.perf_counter() - t0) * 1e3)
            newcomer_t0 = time.perf_counter()
            newcomer = await _wait_client(f"tcp:127.0.0.1:{port}", token)
            await newcomer.fill(SEGMENTS, [8], {})
            newcomer_ms = (time.perf_counter() - newcomer_t0) * 1e3
            status = await newcomer.status()
            await task
            await newcomer.close()
            await client.close()
            for _, w in conns:
                w.close()
        finally:
            proc.terminate()
            proc.wait(10)
    return {"flood_opened": opened, "flood_refused": refused, "flood_core_connections": status.get("connections"),
            "flood_fill_p50_ms_before": round(statistics.median(base), 1),
            "flood_fill_p50_ms_during": round(statistics.median(under), 1),
            "flood_fill_max_ms_during": round(max(under), 1), "flood_new_client_hello_fill_ms": round(newcomer_ms, 1)}


async def stall(model: str | None, conns: int = 4, mib: int = 15) -> dict:
    """Token holders each stalling one byte short of a `mib` MiB frame (issue 17: 4 of them
    grew the core by 65 MB): the core's RssAnon before and after, how many it closed, and
    a legitimate fill while the rest hold their bytes."""
    import struct

    with tempfile.TemporaryDirectory() as tmp:
        token, tok, port = _tcp_setup(tmp)
        proc = await _start_core(model, f"--listen 127.0.0.1:{port} --token-file {tok}")
        try:
            client = await _wait_client(f"tcp:127.0.0.1:{port}", token)
            await client.fill(SEGMENTS, [1], {})
            before = _mem_mb(proc.pid)["RssAnon"]
            raws, closed = [], 0
            for _ in range(conns):
                r, w = await asyncio.open_connection("127.0.0.1", port)
                w.write(protocol.encode(protocol.request(1, "hello", {"version": protocol.PROTOCOL_VERSION,
                                                                      "token": token})))
                assert "result" in await protocol.read_message(r)
                w.write(struct.pack(">I", mib << 20) + b"\0" * ((mib << 20) - 1))
                await w.drain()
                raws.append((r, w))
                await asyncio.sleep(1.0)  # let the core read what it will
            for r, _ in raws:
                try:
                    reply = await asyncio.wait_for(protocol.read_message(r), 0.5)
                    closed += bool(reply and reply.get("error", {}).get("code") == protocol.E_BAD_FRAME)
                except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                    pass
            held = _mem_mb(proc.pid)["RssAnon"]
            t0 = time.perf_counter()
            await client.fill(SEGMENTS, [1], {})
            fill_ms = (time.perf_counter() - t0) * 1e3
            for _, w in raws:
                w.close()
            await client.close()
        finally:
            proc.terminate()
            proc.wait(10)
    return {"stall_connections": conns, "stall_frame_mib": mib, "stall_closed_bad_frame": closed,
            "stall_rss_anon_before_mb": before, "stall_rss_anon_held_mb": held, "stall_growth_mb": held - before,
            "stall_fill_ms_during": round(fill_ms, 1)}


# A stand-in for the LSP server: starts its private core as core_client does (its own pid
# as --parent-pid), prints the core's pid, then waits to be killed. argv: socket, model
# ("" = the default), seconds of debug load delay, the core's stderr log.
EDITOR = """
import os, subprocess, sys, time
sock, model, delay, log = sys.argv[1:5]
env = {**os.environ, "DIFFILL_DEBUG_LOAD_DELAY_S": delay}
core = subprocess.Popen([sys.executable, "-m", "diffusion_core.serving.service", "--socket", sock, "--device", "cpu",
                         "--threads", "1", "--parent-pid", str(os.getpid()), "--log-level", "INFO"]
                        + (["--model", model] if model else []), env=env, stdout=subprocess.DEVNULL,
                        stderr=open(log, "w"))
print(core.pid, flush=True)
time.sleep(600)
"""


def start_editor(tmp: Path, model: str | None, delay: float = 0.0):
    """(editor process, its core's pid, the core's private folder, socket, stderr log)."""
    folder = tmp / "core-x"
    folder.mkdir(mode=0o700)
    sock, log = folder / "core.sock", tmp / "core.log"
    editor = subprocess.Popen([sys.executable, "-c", EDITOR, str(sock), str(model or ""), str(delay), str(log)],
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return editor, int(editor.stdout.readline()), folder, sock, log


def alive(pid: int) -> bool:
    """Running and not a zombie (an orphan's zombie waits for init to reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def seconds_to_exit(pid: int, bound: float) -> float | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < bound:
        if not alive(pid):
            return time.monotonic() - t0
        time.sleep(0.002)
    return None


def parent_death(model: str | None, tries: int = 5, into_load_s: float = 1.5) -> dict:
    """kill -9 of an editor whose private core is loading (``into_load_s`` after the core
    logged "loading the model": importing torch, reading the weights) or serving: seconds
    from the kill to the core's exit, and whether its socket folder went with it."""
    out: dict = {}
    left = 0
    for phase in ("load", "serve"):
        times = []
        for _ in range(tries):
            with tempfile.TemporaryDirectory() as tmp:
                editor, core, folder, _sock, log = start_editor(Path(tmp), model)
                want = "loading the model" if phase == "load" else "listening on"
                deadline = time.monotonic() + 300
                while want not in log.read_text() and time.monotonic() < deadline:
                    time.sleep(0.01)
                if phase == "load":
                    time.sleep(into_load_s)
                    assert "listening on" not in log.read_text(), "the load ended before the kill; lower into_load_s"
                os.kill(editor.pid, signal.SIGKILL)
                editor.wait(10)
                took = seconds_to_exit(core, 30.0)
                times.append(round(took, 3) if took is not None else None)
                left += folder.exists()
                if alive(core):
                    os.kill(core, signal.SIGKILL)
        done = [t for t in times if t is not None]
        out.update({f"parent_death_{phase}_s": times,
                    f"parent_death_{phase}_median_s": round(statistics.median(done), 3) if done else None,
                    f"parent_death_{phase}_max_s": max(done) if done else None})
    out["parent_death_folders_left"] = left
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="diffill bench hostile", description=__doc__.split("\n")[0],
                                epilog="example:\n  diffill bench hostile", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None)
    p.add_argument("--only", default="recovery,nesting,huge,stall,flood")
    p.add_argument("--budget", type=int, default=8, help="tokens of the recovery probe fill (1: the smallest completion)")
    args = p.parse_args(argv)
    out: dict = {"machine": f"{platform.node()} {os.cpu_count()} cpu", "model": args.model or "default",
                 "load_average": os.getloadavg()[0]}
    for name in args.only.split(","):
        t0 = time.perf_counter()
        if name == "nesting":
            out.update(nesting())
        elif name == "parent_death":
            out.update(parent_death(args.model))
        elif name in ("first_run", "hostile_gguf"):
            from evaluation import hostile_cache

            run_cache = getattr(hostile_cache, name)
            result = run_cache(args.model)
            out.update(asyncio.run(result) if asyncio.iscoroutine(result) else result)
        elif name.startswith("recovery"):
            run = recovery if name == "recovery" else recovery_nostandby
            out.update(asyncio.run(run(args.model, budget=args.budget)))
        else:
            out.update(asyncio.run({"huge": huge, "flood": flood, "stall": stall}[name](args.model)))
        print(f"{name:10s} done in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    width = max(len(k) for k in out)
    for k, v in out.items():
        print(f"{k:{width}s}  {v}")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
