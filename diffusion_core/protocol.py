"""Wire format between the editor-side server and the denoising core.

Owns: frame layout (4-byte big-endian length + one msgpack map), the protocol version,
the method names, the error codes, the size limit, request validation and the
addresses (``unix:/path`` | ``tcp:host:port``) both sides agree on.

Must not know: torch, the engine, asyncio servers, LSP. It is the only module both
processes import, so it imports nothing but the standard library and msgpack.

Messages (all msgpack maps with string keys):

    request  {"id": int | str, "method": str, "params": map}
    reply    {"id": ..., "result": map}
    error    {"id": ... | None, "error": {"code": str, "message": str}}
    progress {"id": ..., "progress": map}   (a fill or warm that asked for it: never a reply)

Heartbeats: a core whose hello reply carries "heartbeat_s" sends, for each in-flight
fill or warm that asked for it ("progress": true), a progress frame at least every
heartbeat_s seconds: where it stands ({"phase": "queued" | "encoding" | "decoding" |
"warming", "encoded", "context", "steps", "tokens", "hole", "holes"}) and "engine_idle_s",
the seconds since the core's engine last finished a unit of work (a step or a chunk of
context). A client tells a hung core (no frame at all, or an engine that stopped moving)
from a busy one (frames keep coming) by these, not by how long a fill takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import socket
import stat
import struct
import tempfile
from dataclasses import dataclass
from typing import Any

import msgpack

PROTOCOL_VERSION = 1

# One frame carries one request or reply. A fill request holds the text around the
# holes; the planner already trims documents, so 16 MiB leaves room for a 10 MB file
# while a corrupt length prefix cannot make either side allocate gigabytes.
MAX_FRAME_BYTES = 16 * 1024 * 1024

# Tokens one hole may ask for. The one cap: the engine rejects a larger budget (never
# truncates it), and the editor's fill.maxTokens setting may not exceed it. The
# planner's budgets (grammars/budgets.py) are estimates below it.
MAX_HOLE_TOKENS = 1024

# What a core's matmuls run on (`diffusion_core.network.quant`): a private core's --weights, the
# editor's model.weights setting and `diffill fill --weights`. "auto": packed int8 per channel on a
# CPU, dense bf16 on a GPU; "float32": the weights dequantized exactly (the reference).
WEIGHTS_SCHEMES = ("auto", "int4", "int8", "float32")

# Before a successful hello a peer is a stranger (on TCP, anyone who can connect): it
# may send only small frames, so it cannot make the core buffer megabytes.
MAX_HELLO_BYTES = 64 * 1024

_HEADER = struct.Struct(">I")
HEADER_BYTES = _HEADER.size

# Methods.
HELLO = "hello"
FILL = "fill"
CANCEL = "cancel"
STATUS = "status"
SHUTDOWN = "shutdown"
WARM = "warm"  # encode a fill's context at idle priority, keep it for the fill that follows
METHODS = (HELLO, FILL, CANCEL, STATUS, SHUTDOWN, WARM)

# Seconds between two progress frames of one in-flight request (see the module docstring).
HEARTBEAT_S = 1.0

# Error codes (the "code" of an error reply).
E_BAD_FRAME = "bad_frame"  # undecodable or oversized frame: the connection is closed
E_BAD_REQUEST = "bad_request"  # well-formed frame, wrong shape (missing id, bad params)
E_UNKNOWN_METHOD = "unknown_method"
E_HANDSHAKE = "handshake_required"  # a request before a successful hello
E_VERSION = "version_mismatch"
E_UNAUTHORIZED = "unauthorized"  # wrong or missing token: the connection is closed
E_INVALID_PARAMS = "invalid_params"  # the engine rejected the fill (CoreError)
E_BUSY = "busy"  # the scheduler queue is full; retry later
E_CANCELLED = "cancelled"
E_OUT_OF_MEMORY = "out_of_memory"
E_SHUTTING_DOWN = "shutting_down"
E_ENGINE_FAILED = "engine_failed"  # the engine thread died: the core exits; the client takes a fresh one
E_INTERNAL = "internal"

TOKEN_ENV = "DIFFILL_CORE_TOKEN"


class ProtocolError(ValueError):
    """A frame or message that breaks the protocol; ``code`` is one of the E_* codes."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------- frames


def encode(message: dict, max_bytes: int = MAX_FRAME_BYTES) -> bytes:
    """One frame: length prefix + msgpack body. Raises ProtocolError when too large."""
    try:
        body = msgpack.packb(message, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:  # e.g. a set, or an int over 64 bits
        raise ProtocolError(E_BAD_REQUEST, f"message is not msgpack-serializable: {exc}") from None
    if len(body) > max_bytes:
        raise ProtocolError(E_BAD_FRAME, f"frame of {len(body)} bytes exceeds the limit of {max_bytes}")
    return _HEADER.pack(len(body)) + body


def decode_body(body: bytes) -> dict:
    """The message in one frame body; ProtocolError for anything that is not a msgpack map."""
    try:
        message = msgpack.unpackb(body, raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:  # msgpack raises many types (ExtraData, FormatError, ValueError, ...)
        raise ProtocolError(E_BAD_FRAME, f"undecodable msgpack frame: {type(exc).__name__}") from None
    if not isinstance(message, dict):
        raise ProtocolError(E_BAD_FRAME, f"frame holds a {type(message).__name__}, not a map")
    return message


def frame_length(header: bytes, max_bytes: int = MAX_FRAME_BYTES) -> int:
    """Body length announced by a 4-byte header; ProtocolError when over the limit."""
    (length,) = _HEADER.unpack(header)
    if length > max_bytes:
        raise ProtocolError(E_BAD_FRAME, f"frame of {length} bytes exceeds the limit of {max_bytes}")
    return length


async def read_message(reader: asyncio.StreamReader, max_bytes: int = MAX_FRAME_BYTES) -> dict | None:
    """Next message from a stream; None at a clean end of stream between frames.

    Raises ProtocolError for an oversized or undecodable frame and
    asyncio.IncompleteReadError when the stream ends inside a frame.
    """
    try:
        header = await reader.readexactly(HEADER_BYTES)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise
    length = frame_length(header, max_bytes)
    return decode_body(await reader.readexactly(length))


# ---------------------------------------------------------------- messages


def request(msg_id: int | str, method: str, params: dict | None = None) -> dict:
    return {"id": msg_id, "method": method, "params": params or {}}


def reply(msg_id: Any, result: dict) -> dict:
    return {"id": msg_id, "result": result}


def error(msg_id: Any, code: str, message: str) -> dict:
    return {"id": msg_id, "error": {"code": code, "message": message}}


@dataclass(frozen=True)
class Request:
    id: int | str
    method: str
    params: dict


def parse_request(message: dict) -> Request:
    """Check the envelope of a request; ProtocolError(E_BAD_REQUEST | E_UNKNOWN_METHOD)."""
    msg_id = message.get("id")
    if isinstance(msg_id, bool) or not isinstance(msg_id, (int, str)):
        raise ProtocolError(E_BAD_REQUEST, "request 'id' must be an int or a str")
    method = message.get("method")
    if not isinstance(method, str):
        raise ProtocolError(E_BAD_REQUEST, "request 'method' must be a str")
    params = message.get("params", {})
    if not isinstance(params, dict):
        raise ProtocolError(E_BAD_REQUEST, "request 'params' must be a map")
    if method not in METHODS:
        raise ProtocolError(E_UNKNOWN_METHOD, f"unknown method {method[:64]!r}")
    return Request(msg_id, method, params)


# Per-hole stop rules a fill may carry ("stops": one map per hole, keys optional; old
# clients send none): max_lines > 0 ends a hole after that many newline-terminated lines
# with content; dedent_below >= 0 ends it before a later line whose content starts at a
# column below that; min_depth <= 0 ends it before a closing bracket that takes its depth
# below that (the engine's HoleSpec; docs/architecture.md, engine contract).
STOP_KEYS = ("max_lines", "dedent_below", "min_depth")


@dataclass(frozen=True)
class FillRequest:
    segments: list[str]
    budgets: list[int]
    params: dict
    request_id: str | None
    stops: list[dict] | None = None  # one map of STOP_KEYS per hole, or None
    progress: bool = False  # send progress frames (heartbeats) while it is in flight


def parse_fill(params: dict) -> FillRequest:
    """Check the shape of fill params (values are the engine's business)."""
    segments = params.get("segments")
    budgets = params.get("budgets")
    if not isinstance(segments, list) or not all(isinstance(s, str) for s in segments):
        raise ProtocolError(E_BAD_REQUEST, "fill 'segments' must be a list of str")
    if not isinstance(budgets, list) or not all(isinstance(b, int) and not isinstance(b, bool) for b in budgets):
        raise ProtocolError(E_BAD_REQUEST, "fill 'budgets' must be a list of int")
    if not budgets or len(segments) != len(budgets) + 1:
        raise ProtocolError(
            E_BAD_REQUEST,
            f"fill needs len(segments) == len(budgets) + 1 >= 2, got {len(segments)} and {len(budgets)}",
        )
    fill_params = params.get("params", {})
    if not isinstance(fill_params, dict):
        raise ProtocolError(E_BAD_REQUEST, "fill 'params' must be a map")
    request_id = params.get("request_id")
    if request_id is not None and not isinstance(request_id, str):
        raise ProtocolError(E_BAD_REQUEST, "fill 'request_id' must be a str")
    stops = params.get("stops")
    if stops is not None:
        if not isinstance(stops, list) or len(stops) != len(budgets) or not all(
                isinstance(s, dict) and all(k in STOP_KEYS and isinstance(v, int) and not isinstance(v, bool)
                                            for k, v in s.items()) for s in stops):
            raise ProtocolError(E_BAD_REQUEST, f"fill 'stops' must be one map of int {'/'.join(STOP_KEYS)} per hole")
    progress = params.get("progress", False)
    if not isinstance(progress, bool):
        raise ProtocolError(E_BAD_REQUEST, "fill 'progress' must be a bool")
    return FillRequest(segments, budgets, fill_params, request_id, stops, progress)


def parse_warm(params: dict) -> FillRequest:
    """A warm request: a one-hole fill's shape (segments, budgets of one) without stops."""
    fill = parse_fill(params)
    if len(fill.budgets) != 1:
        raise ProtocolError(E_BAD_REQUEST, "warm takes one hole: two segments and one budget")
    return fill


# ---------------------------------------------------------------- load progress

# A private core loads before it listens, and a first conversion takes minutes (issue 22: two
# editors both gave up at the 120 s start deadline and killed their converting cores). So a
# core started with --load-progress writes its load's progress to stderr, one line each:
# LOAD_PROGRESS_PREFIX + {"done": int, "total": int, "what": str}; the client waits as long
# as these keep changing (core_client) and the editor sees them as $/progress.
LOAD_PROGRESS_PREFIX = "diffill-load-progress "


def load_progress_line(done: int, total: int, what: str) -> str:
    return LOAD_PROGRESS_PREFIX + json.dumps({"done": int(done), "total": int(total), "what": str(what)[:200]})


def parse_load_progress(line: str) -> tuple[int, int, str] | None:
    """(done, total, what) of a load progress line; None for any other line."""
    if not line.startswith(LOAD_PROGRESS_PREFIX):
        return None
    try:
        d = json.loads(line[len(LOAD_PROGRESS_PREFIX):])
        done, total, what = d["done"], d["total"], d["what"]
    except (ValueError, KeyError, TypeError):
        return None
    if not (isinstance(done, int) and isinstance(total, int) and isinstance(what, str)):
        return None
    return done, total, what


# ---------------------------------------------------------------- addresses


@dataclass(frozen=True)
class Address:
    kind: str  # "unix" | "tcp"
    path: str = ""
    host: str = ""
    port: int = 0

    def __str__(self) -> str:
        return f"unix:{self.path}" if self.kind == "unix" else f"tcp:{self.host}:{self.port}"


def parse_address(text: str) -> Address:
    """``unix:/path`` or ``tcp:host:port`` (IPv6 hosts in brackets); ValueError otherwise."""
    if text.startswith("unix:") and len(text) > 5:
        return Address("unix", path=text[5:])
    if text.startswith("tcp:"):
        host, port = split_host_port(text[4:])
        return Address("tcp", host=host, port=port)
    raise ValueError(f"core address {text!r} is neither unix:/path nor tcp:host:port")


def split_host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"address {text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ---------------------------------------------------------------- local trust

# A token is printable ASCII without spaces, and one a user gives (--token-file, the
# environment) has at least MIN_TOKEN_CHARS of it: "" or "   " is no token (issue 22: a
# whitespace-only DIFFILL_CORE_TOKEN stripped to "" opened a 0.0.0.0 core to anyone).
# The generated one (secrets.token_urlsafe(32)) has 43.
MIN_TOKEN_CHARS = 16
MAX_TOKEN_CHARS = 1024


def check_token(value: str, source: str, min_chars: int = MIN_TOKEN_CHARS) -> str:
    """The token in ``value`` (surrounding whitespace dropped); ValueError with one line
    naming ``source`` when it is empty, whitespace, too short or too long, or holds
    spaces or control characters."""
    token = value.strip()
    if not token:
        raise ValueError(f"{source}: empty or whitespace only; that is no token")
    if any(not ("!" <= c <= "~") for c in token):
        raise ValueError(f"{source}: the token holds spaces, control or non-ASCII characters")
    if len(token) > MAX_TOKEN_CHARS:
        raise ValueError(f"{source}: the token has {len(token)} characters, more than {MAX_TOKEN_CHARS}")
    if len(token) < min_chars:
        raise ValueError(f"{source}: the token has {len(token)} characters; at least {min_chars} are needed "
                         "(leave it out and diffill core generates one)")
    return token


def check_private_dir(path: str, what: str, forbid: int = 0o077) -> None:
    """``path`` must be a real folder, not a symbolic link (opened with O_NOFOLLOW and
    checked on the open descriptor), owned by this user, with none of the ``forbid``
    mode bits, inside a folder owned by this user or root that other users cannot write
    (or that is sticky, as /tmp is), so nobody else can swap it after this check. Another
    local user can plant /tmp/diffill-<uid> as a link to a folder they later repoint
    (issue 22); a check that follows links passes it. ValueError, one line naming ``what``."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if os.path.islink(path):
            raise ValueError(f"{what} {path} is a symbolic link, not a folder (another user may have planted it); "
                             "remove it") from None
        raise ValueError(f"{what} {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    mode = stat.S_IMODE(st.st_mode)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise ValueError(f"{what} {path} belongs to uid {st.st_uid}, not to this user ({os.getuid()}); "
                         "another user may have made it: remove it")
    if mode & forbid:
        others = "writable by other users" if mode & forbid & 0o022 else "readable by other users"
        raise ValueError(f"{what} {path} (mode {mode:04o}) is {others}: it is not private to this user "
                         f"(use mode {0o777 & ~forbid:04o})")
    parent = os.path.dirname(os.path.abspath(path))
    pst = os.stat(parent)
    if pst.st_uid not in (0, os.getuid()) or (pst.st_mode & 0o022 and not pst.st_mode & stat.S_ISVTX):
        raise ValueError(f"{what} {path} lies in {parent} (uid {pst.st_uid}, mode {stat.S_IMODE(pst.st_mode):04o}), "
                         "which another user could rename it out of; use a private folder")


def runtime_dir() -> str:
    """A private (0700) directory for sockets and tokens: $XDG_RUNTIME_DIR/diffill or
    <tmp>/diffill-<uid>, made if missing and checked without following links
    (check_private_dir); ValueError with one line when it cannot be trusted."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    path = os.path.join(base, "diffill") if base and os.path.isdir(base) else os.path.join(
        tempfile.gettempdir(), f"diffill-{os.getuid()}"
    )
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)  # never follows a planted link: mkdir fails on any existing name
    check_private_dir(path, "runtime directory")
    return path


def default_socket_path() -> str:
    return os.path.join(runtime_dir(), "core.sock")


def peer_credentials(sock: socket.socket) -> tuple[int, int] | None:
    """(pid, uid) of the process at the other end of a Unix socket, from the kernel
    (SO_PEERCRED: whoever called listen() or connect()); None where the platform has no
    SO_PEERCRED."""
    opt = getattr(socket, "SO_PEERCRED", None)
    if opt is None:
        return None
    creds = struct.Struct("3i")
    pid, uid, _gid = creds.unpack(sock.getsockopt(socket.SOL_SOCKET, opt, creds.size))
    return pid, uid


def check_peer(sock: socket.socket, path: str, pid: int | None = None) -> None:
    """Before a byte of code goes to a Unix socket: its listener must run as this user
    (and be process ``pid`` when given, a private core we started). Where the kernel
    gives no credentials, the socket file's owner is checked instead. ValueError."""
    creds = peer_credentials(sock)
    if creds is None:
        peer_pid, peer_uid = None, os.lstat(path).st_uid
    else:
        peer_pid, peer_uid = creds
    if peer_uid != os.getuid():
        raise ValueError(f"the socket {path} is served by uid {peer_uid}, not by this user ({os.getuid()}): "
                         "refusing to send it code")
    if pid is not None and peer_pid is not None and peer_pid != pid:
        raise ValueError(f"the socket {path} is served by process {peer_pid}, not by the core started as "
                         f"process {pid}: refusing to send it code")


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile, q in [0, 100]; None for no values.

    The one convention of every p50/p95 diffill reports: the status replies of both
    processes (so they live in the module both import) and the benchmarks. Nearest rank
    always names a latency that was measured, never one interpolated between two."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def one_line(exc: BaseException, limit: int = 500) -> str:
    """The first line of an exception's message (its type name when empty), capped: what
    an error reply, a log line or a message to the user says about a failure."""
    text = str(exc).strip().splitlines()
    return text[0][:limit] if text else type(exc).__name__
