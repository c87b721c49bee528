"""Another local user on the same machine (issue 22 items 1 and 2).

The attack: with XDG_RUNTIME_DIR unset, user 65534 plants /tmp/diffill-<uid> as a link
to the victim's own 0700 folder; a check that follows links passes, the victim's core
binds there, the attacker repoints the link at a folder holding their own socket, and the
victim's client sends it the document. Now every folder is opened without following
links and checked for owner and mode on the open descriptor, in a parent nobody else can
swap it in (protocol.check_private_dir), and the client checks the listener's uid
(SO_PEERCRED) before sending a byte. The second user is simulated with a second folder
and a link; where the tests run as root, a real second user (uid 65534, by setuid in a
child) holds the socket. Tokens: "" or whitespace is no token (a blank
DIFFILL_CORE_TOKEN let a 0.0.0.0 core accept token "")."""
from __future__ import annotations

import asyncio
import os
import socket
import stat
import tempfile
import threading

import pytest

from diffusion_core import protocol
from diffusion_core.serving import service
from diffusion_core.serving.service import ServiceConfig, build_parser, resolve_listen
from lsp_server.core_client import CoreClient, CoreUnavailable
from tests.service.service_fakes import FakeBackend
from tests.service.test_service_server import FILL, Raw, close_raw_connections, start_server  # noqa: F401

NOBODY = 65534
as_root = pytest.mark.skipif(os.getuid() != 0, reason="a real second user needs root (setuid in a child)")


@pytest.fixture
def tmp_root(tmp_path, monkeypatch):
    """A sticky, world-writable stand-in for /tmp, and no XDG_RUNTIME_DIR: the fallback."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    tmp.chmod(0o1777)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


def test_a_planted_link_as_the_runtime_folder_is_refused(tmp_root, tmp_path):
    victim = tmp_path / "victims-own-folder"
    victim.mkdir(mode=0o700)  # ours and 0700: a check through the link passed
    (tmp_root / f"diffill-{os.getuid()}").symlink_to(victim)
    with pytest.raises(ValueError, match="symbolic link.*planted"):
        protocol.runtime_dir()
    with pytest.raises(ValueError, match="symbolic link"):
        protocol.default_socket_path()
    assert os.listdir(victim) == []  # nothing was made through the link


def test_a_dangling_planted_link_is_not_followed_by_mkdir(tmp_root, tmp_path):
    target = tmp_path / "attacker-will-make-this"
    (tmp_root / f"diffill-{os.getuid()}").symlink_to(target)
    with pytest.raises(ValueError, match="symbolic link"):
        protocol.runtime_dir()
    assert not target.exists()


def test_the_runtime_folder_is_made_private_and_a_loose_one_refused(tmp_root):
    path = protocol.runtime_dir()
    st = os.lstat(path)
    assert path == str(tmp_root / f"diffill-{os.getuid()}")
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == os.getuid()
    os.chmod(path, 0o750)
    with pytest.raises(ValueError, match="readable by other users"):
        protocol.runtime_dir()


def test_a_private_folder_in_a_folder_others_can_swap_it_in_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # not sticky: anyone may rename our folder away and put theirs
    mine = shared / "mine"
    mine.mkdir(mode=0o700)
    with pytest.raises(ValueError, match="rename it out of"):
        protocol.check_private_dir(str(mine), "runtime directory")
    shared.chmod(0o1777)  # sticky, as /tmp: only the owner may rename it
    protocol.check_private_dir(str(mine), "runtime directory")


@as_root
def test_a_runtime_folder_made_by_another_user_is_refused(tmp_root):
    planted = tmp_root / f"diffill-{os.getuid()}"
    planted.mkdir(mode=0o700)
    os.chown(planted, NOBODY, NOBODY)
    with pytest.raises(ValueError, match=f"belongs to uid {NOBODY}"):
        protocol.runtime_dir()


def test_socket_folder_given_as_a_link_is_refused(tmp_path, capsys):
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(real)
    assert service.main(["--socket", str(tmp_path / "link" / "core.sock")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "symbolic link" in err[0] and str(tmp_path / "link") in err[0]


# ---------------------------------------------------------------- the listener's uid


class Impostor:
    """A socket that answers hello like a core and records every byte it is sent."""

    def __init__(self, path: str, uid: int | None = None, report_fd: int = -1):
        self.path, self.received = path, bytearray()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        os.chmod(path, 0o666)
        self.ready = threading.Event()
        if uid is None:
            self.sock.listen(4)
            threading.Thread(target=self._serve, daemon=True).start()
        else:  # listen() as `uid` in a child: SO_PEERCRED names who called listen()
            self.child = os.fork()
            if self.child == 0:
                try:
                    os.setgid(uid)
                    os.setuid(uid)
                    self.sock.listen(4)
                    conn, _ = self.sock.accept()
                    data = conn.recv(1 << 16)
                    os.write(report_fd, data)
                finally:
                    os._exit(0)

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            data = conn.recv(1 << 16)
            self.received += data
            conn.close()


async def test_the_client_sends_nothing_to_a_socket_another_user_serves(tmp_path, monkeypatch):
    """Simulated second user: our own listener, seen by a client that runs as uid + 1."""
    impostor = Impostor(str(tmp_path / "core.sock"))
    real_uid = os.getuid()
    monkeypatch.setattr(os, "getuid", lambda: real_uid + 1)
    client = CoreClient(address=f"unix:{impostor.path}", connect_timeout=2.0)
    with pytest.raises(CoreUnavailable, match=f"served by uid {real_uid}.*refusing to send it code"):
        await client.start()
    await asyncio.sleep(0.1)
    assert impostor.received == b""  # not a byte of code, not even the hello
    await client.close()
    impostor.sock.close()


@as_root
async def test_the_client_refuses_a_real_second_users_socket(tmp_path):
    path = str(tmp_path / "core.sock")
    read_end, write_end = os.pipe()
    impostor = Impostor(path, uid=NOBODY, report_fd=write_end)
    os.close(write_end)
    try:
        for _ in range(200):  # until the child listens
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(path)
                creds = protocol.peer_credentials(probe)
                break
            except OSError:
                await asyncio.sleep(0.01)
            finally:
                probe.close()
        assert creds is not None and creds[1] == NOBODY
        client = CoreClient(address=f"unix:{path}", connect_timeout=2.0)
        with pytest.raises(CoreUnavailable, match=f"served by uid {NOBODY}"):
            await client.start()
        await client.close()
    finally:
        os.kill(impostor.child, 9)
        os.waitpid(impostor.child, 0)
        got = os.read(read_end, 1 << 16)
        os.close(read_end)
    assert got == b""  # the probe's and the client's connections sent nothing


def test_check_peer_names_the_wrong_process(tmp_path):
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        protocol.check_peer(a, "pair", pid=os.getpid())  # ours: passes
        with pytest.raises(ValueError, match=f"process {os.getpid()}, not by the core started as process 1"):
            protocol.check_peer(a, "pair", pid=1)
    finally:
        a.close(), b.close()


# ---------------------------------------------------------------- tokens


@pytest.mark.parametrize("blank", ["", " ", "   \t", "\n"])
def test_a_blank_token_in_the_environment_is_no_token(monkeypatch, blank, capsys):
    monkeypatch.setenv(protocol.TOKEN_ENV, blank)
    with pytest.raises(ValueError, match="non-loopback address needs"):
        resolve_listen(build_parser().parse_args(["--listen", "0.0.0.0:7777"]))
    assert service.main(["--listen", "0.0.0.0:7777"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "non-loopback" in err[0]
    _, token, generated = resolve_listen(build_parser().parse_args(["--listen", "127.0.0.1:0"]))
    assert generated and len(token) >= 32  # loopback: one is generated, as with no variable


@pytest.mark.parametrize("text, why", [
    ("   \n", "empty or whitespace"), ("two words-and-more-text", "spaces"), ("short", "at least 16"),
    ("x" * 2000, "more than 1024"), ("tok\x07en-0123456789abc", "control"),
])
def test_bad_tokens_are_refused_in_one_line(tmp_path, monkeypatch, text, why):
    token_file = tmp_path / "token"
    token_file.write_text(text)
    token_file.chmod(0o600)
    monkeypatch.delenv(protocol.TOKEN_ENV, raising=False)
    with pytest.raises(ValueError, match=why) as info:
        resolve_listen(build_parser().parse_args(["--listen", "0.0.0.0:1", "--token-file", str(token_file)]))
    assert str(token_file) in str(info.value) and "\n" not in str(info.value)
    if text.strip():
        monkeypatch.setenv(protocol.TOKEN_ENV, text)
        with pytest.raises(ValueError, match=why):
            resolve_listen(build_parser().parse_args(["--listen", "0.0.0.0:1"]))


def test_a_core_cannot_be_configured_with_a_blank_token():
    for blank in ("", " ", " tok "):
        with pytest.raises(ValueError):
            ServiceConfig(token=blank)


async def test_hello_with_an_empty_or_huge_token_is_refused(tmp_path):
    server, address = await start_server(tmp_path, tcp=True, token="s3cret")
    try:
        for token in ("", " ", "s" * (protocol.MAX_TOKEN_CHARS + 1), None, 7):
            raw = await Raw.open(address)
            assert (await raw.hello(token=token))["error"]["code"] == protocol.E_UNAUTHORIZED
            raw.close()
        raw = await Raw.open(address)
        assert "result" in await raw.hello(token="s3cret")
    finally:
        await server.close()


def test_the_client_sends_no_blank_token(monkeypatch):
    monkeypatch.setenv(protocol.TOKEN_ENV, "  ")
    assert CoreClient(address="tcp:127.0.0.1:1").token is None
    assert CoreClient(address="tcp:127.0.0.1:1", token=" \t").token is None
    assert CoreClient(address="tcp:127.0.0.1:1", token=" abc ").token == "abc"
