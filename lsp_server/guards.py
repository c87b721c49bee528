"""Hostile-input guards of the language server: framing and "every request gets an answer".

Owns: reading LSP frames from a byte stream with bounded memory (``FrameParser``: header
lines of bounded length, Content-Length matched case-insensitively, LF-only lines
accepted, negative / non-numeric / oversized lengths refused, a lying length detected and
the stream resynchronised at the next header), the message loop that replaces pygls'
``run_async`` (malformed JSON answered -32700, a request whose params do not structure
answered -32602 with its id, never a popup and never silence), and ``install``, which
puts both on a server. Before this, one ``Content-Length: 1099511627776`` killed the
server and a lying or lowercase one left it alive but deaf forever (issue 17).

Must not know: handlers, documents, grammars, the core. It knows pygls' protocol object
only through ``structure_message``, ``handle_message`` and ``_send_response``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import sys
import threading
from typing import Any, BinaryIO, Callable

from pygls.io_ import StdoutWriter

log = logging.getLogger(__name__)

# All header lines of one message together; real clients send two short lines.
MAX_HEADER_BYTES = 8 * 1024
# One message body. A didOpen of a 10 MB file is ~10-20 MB of JSON; past this a length
# is refused rather than buffered.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
READ_CHUNK = 64 * 1024
_READ_QUEUE = 16  # chunks read ahead of the loop: at most 1 MiB buffered between threads

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
INVALID_PARAMS = -32602

_HEADER_END = re.compile(rb"\r?\n\r?\n")
_LENGTH = re.compile(rb"content-length[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE)
# A header inside what a lying Content-Length claims is body. A raw newline can never be
# inside a JSON string, and a body is only cut there if what precedes it parses.
_NEXT_HEADER = re.compile(rb"content-length[ \t]*:[ \t]*\d+[ \t]*\r?\n", re.IGNORECASE)
_TAIL = 64  # bytes kept when dropping junk, so a header split across reads is still found


class FrameParser:
    """Incremental LSP framing: ``feed(bytes)`` returns ("body", bytes) and ("error", str)
    events. After an error the stream is resynchronised at the next Content-Length."""

    def __init__(self, max_header: int = MAX_HEADER_BYTES, max_body: int = MAX_MESSAGE_BYTES):
        self.max_header, self.max_body = max_header, max_body
        self.buf = bytearray()
        self.need: int | None = None  # body length once a header was read
        self.scanned = 0  # body bytes already searched for a following header
        self.resync = False

    def feed(self, data: bytes) -> list[tuple[str, Any]]:
        self.buf += data
        out: list[tuple[str, Any]] = []
        while True:
            if self.need is not None:
                body = self._body()
                if body is None:
                    return out
                out.append(("body", body))
            elif self.resync and not self._find_header():
                return out
            else:
                event = self._header()
                if event is None:
                    return out
                if event[0] == "error":
                    out.append(event)

    def _find_header(self) -> bool:
        m = _LENGTH.search(self.buf)
        if m is None:
            del self.buf[:max(len(self.buf) - _TAIL, 0)]
            return False
        del self.buf[:m.start()]
        self.resync = False
        return True

    def _error(self, message: str) -> tuple[str, str]:
        self.resync = True
        return ("error", message)

    def _header(self) -> tuple[str, Any] | None:
        m = _HEADER_END.search(self.buf, 0, self.max_header + 4)
        if m is None:
            if len(self.buf) > self.max_header:
                del self.buf[:len(self.buf) - _TAIL]
                return self._error(f"header longer than {self.max_header} bytes")
            return None
        header = bytes(self.buf[:m.start()])
        del self.buf[:m.end()]
        if not header.strip():
            return ("skip", None)  # blank lines between messages
        lengths = _LENGTH.findall(header)
        if not lengths:
            return self._error("header without Content-Length")
        value = lengths[-1].strip()
        if not value.isdigit() or len(value) > 12:
            return self._error(f"bad Content-Length {value[:40]!r}")
        n = int(value)
        if n > self.max_body:
            return self._error(f"Content-Length {n} exceeds the limit of {self.max_body}")
        self.need, self.scanned = n, 0
        return ("header", n)

    def _body(self) -> bytes | None:
        n = self.need
        assert n is not None
        if len(self.buf) >= n:
            body = bytes(self.buf[:n])
            del self.buf[:n]
            self.need = None
            return body
        # A length that claims more than was sent: if a complete message is followed by
        # the next header, the length lied; take the message and read on from there.
        # (Starts collected first: a live finditer holds the buffer, which then cannot shrink.)
        starts = [m.start() for m in _NEXT_HEADER.finditer(self.buf, max(self.scanned - _TAIL, 0))]
        for start in starts:
            if _is_json(self.buf[:start]):
                body = bytes(self.buf[:start])
                del self.buf[:start]
                self.need = None
                log.warning("Content-Length %d but the next header came after %d bytes", n, len(body))
                return body
        self.scanned = len(self.buf)
        return None


def _is_json(data: bytes | bytearray) -> bool:
    try:
        json.loads(data)
        return True
    except ValueError:
        return False


# ---------------------------------------------------------------- the message loop


def handle_body(protocol: Any, body: bytes) -> None:
    """One frame's body: parse, structure and hand it to pygls, answering what fails."""
    try:
        data = json.loads(body)
    except ValueError as exc:  # includes UnicodeDecodeError
        log.warning("malformed JSON from the client: %s", exc)
        send_error(protocol, None, PARSE_ERROR, f"Parse error: {exc}")
        return
    if not isinstance(data, dict):
        send_error(protocol, None, INVALID_REQUEST, "Invalid Request: not a JSON object")
        return
    msg_id = data.get("id")
    is_request = "method" in data and isinstance(msg_id, (int, str)) and not isinstance(msg_id, bool)
    if "method" in data and "params" not in data:
        data["params"] = None  # JSON-RPC lets a request omit params; pygls' generic type needs the key
    try:
        message = protocol.structure_message(data)
    except Exception as exc:  # pygls raises JsonRpcInvalidParams / JsonRpcInternalError
        first = _root_cause(exc)
        log.warning("invalid params for %r: %s", data.get("method"), first)
        if is_request:  # the error reply is the answer: no popup
            send_error(protocol, msg_id, INVALID_PARAMS, f"Invalid params for {data.get('method')}: {first}")
        else:  # the editor's bug, not ours: logged, no "internal error" popup (issue 22)
            _drop_unsynced_document(protocol._server, data)
        return
    if isinstance(message, dict):  # no "jsonrpc" key: pygls ignores these
        if is_request:
            send_error(protocol, msg_id, INVALID_REQUEST, "Invalid Request: jsonrpc must be \"2.0\"")
        return
    if is_request and getattr(message, "jsonrpc", None) != "2.0":
        send_error(protocol, msg_id, INVALID_REQUEST, "Invalid Request: jsonrpc must be \"2.0\"")
        return
    protocol.handle_message(message)


def _drop_unsynced_document(server: Any, data: dict) -> None:
    """A didChange that cannot be applied (``"line": -1``) leaves the server's copy of the
    document out of step with the editor's: later edits would land in the wrong places and
    fills would be made for a text nobody sees. The document is forgotten until the editor
    opens it again (completions there answer empty meanwhile)."""
    if data.get("method") != "textDocument/didChange":
        return
    params = data.get("params")
    doc = params.get("textDocument") if isinstance(params, dict) else None
    uri = doc.get("uri") if isinstance(doc, dict) else None
    closed = getattr(server, "closed", None)
    if isinstance(uri, str) and closed is not None:
        log.warning("%s: forgotten until it is opened again (a change that does not fit it)", uri[:200])
        closed(uri)


def _root_cause(exc: BaseException) -> str:
    """The first leaf of cattrs' nested validation errors, one line: "Position.line should
    be in range [0:2147483647], but was -1." rather than "While structuring ..."."""
    seen = 0
    while seen < 64:
        seen += 1
        if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
            exc = exc.exceptions[0]
        elif exc.__cause__ is not None:
            exc = exc.__cause__
        else:
            break
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def send_error(protocol: Any, msg_id: Any, code: int, message: str) -> None:
    # A plain dict, not pygls' ResponseErrorMessage: that drops "id" when it is None, and
    # JSON-RPC wants "id": null on an error about a message whose id could not be read.
    protocol._send_data({"jsonrpc": "2.0", "id": msg_id, "error": {"code": code, "message": message[:500]}})


async def run_frames(read: Callable[[], Any], protocol: Any, stop: threading.Event) -> None:
    """Read chunks with ``await read()`` (b"" at the end) until the stream ends or stop is set."""
    parser = FrameParser()
    while not stop.is_set():
        chunk = await read()
        if not chunk:
            break
        for kind, value in parser.feed(chunk):
            if kind == "error":
                log.warning("bad frame from the client: %s; resynchronising", value)
                send_error(protocol, None, PARSE_ERROR, f"Parse error: {value}")
            else:
                try:
                    handle_body(protocol, value)
                except (SystemExit, KeyboardInterrupt):
                    raise
                except Exception:  # a bug here must not end the loop
                    log.exception("unable to handle a message")


def stdin_reader(stdin: BinaryIO) -> Callable[[], Any]:
    """An async ``read()`` over a blocking binary stream. A daemon thread does the blocking
    reads (it never keeps the process alive at exit); a bounded queue gives backpressure."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes] = asyncio.Queue(_READ_QUEUE)
    read1 = getattr(stdin, "read1", stdin.read)
    try:
        # A real file descriptor is read with os.read: a daemon thread blocked inside a
        # BufferedReader holds its lock, and the interpreter aborts at exit ("could not
        # acquire lock for <stdin> at interpreter shutdown") when it tries to take it.
        fd = stdin.fileno()
        read1 = lambda n: os.read(fd, n)  # noqa: E731
    except (AttributeError, OSError, ValueError):
        pass

    def pump() -> None:
        while True:
            try:
                chunk = read1(READ_CHUNK)
            except (OSError, ValueError):
                chunk = b""
            try:
                asyncio.run_coroutine_threadsafe(queue.put(chunk), loop).result()
            except (RuntimeError, asyncio.CancelledError):  # the loop is gone
                return
            if not chunk:
                return

    threading.Thread(target=pump, name="lsp-stdin", daemon=True).start()
    return queue.get


async def close_core(server: Any) -> None:
    """The server's core link closed, bounded: a private core must not outlive the server."""
    close = getattr(server, "close_core", None)
    if close is None:
        return
    try:
        await asyncio.wait_for(close(), 10.0)
    except (Exception, asyncio.CancelledError) as exc:
        log.warning("closing the core: %s", type(exc).__name__)


def install(server: Any) -> Any:
    """Serve ``server`` (a pygls LanguageServer) over stdio / TCP through the guarded loop."""

    def start_io(stdin: BinaryIO | None = None, stdout: BinaryIO | None = None) -> int:
        """Serve until the stream ends, `exit`, SIGINT or SIGTERM; returns the exit code
        (`exit` without `shutdown` is 1, as the spec says; a signal is a clean stop, 0).
        Every way out closes the core (a private one is stopped and its folder removed)."""
        server._stop_event = stop = threading.Event()
        server.protocol.set_writer(StdoutWriter(stdout or sys.stdout.buffer))
        code = 0

        async def main() -> None:
            loop = asyncio.get_running_loop()
            frames = asyncio.ensure_future(run_frames(stdin_reader(stdin or sys.stdin.buffer), server.protocol, stop))
            signalled: list[str] = []

            def on_signal(sig: signal.Signals) -> None:
                signalled.append(sig.name)
                frames.cancel()

            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, on_signal, sig)
            try:
                await frames
            except asyncio.CancelledError:
                if not signalled:
                    raise
                log.warning("%s: shutting down", signalled[0])
            finally:
                await close_core(server)

        try:
            asyncio.run(main())
        except BrokenPipeError:
            log.error("the client closed the connection; shutting down")
        except KeyboardInterrupt:
            pass
        except SystemExit as exc:  # pygls' `exit` handler: 0 after `shutdown`, else 1
            code = exc.code if isinstance(exc.code, int) else 0
        finally:
            server.shutdown()
        return code

    def start_tcp(host: str, port: int) -> None:
        server._stop_event = stop = threading.Event()

        async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            server.protocol.set_writer(writer)
            await run_frames(lambda: reader.read(READ_CHUNK), server.protocol, stop)
            server.shutdown()

        async def main() -> None:
            server._server = await asyncio.start_server(connection, host, port)
            async with server._server:
                await server._server.serve_forever()

        try:
            asyncio.run(main())
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
            pass

    server.start_io = start_io
    server.start_tcp = start_tcp
    return server
