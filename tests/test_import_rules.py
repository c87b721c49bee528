"""The packages keep their rules (docs/architecture.md): who may import whom, diffusion_core's
rooms each below the next, no cycles, and the language server runs with torch impossible to import.

Imports are read from the source (every ``import``, at module level or inside a
function, since a lazy import still runs), so a rule cannot be dodged by importing late;
only imports under ``if TYPE_CHECKING:`` (which never run) are left out.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from tests.lsp_server.lsp_session import execute, inline, open_doc, session, status, wait_ready

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("lsp_server", "grammars", "diffusion_core", "evaluation", "diffill", "training")
TORCH = ("torch", "safetensors", "numpy", "gguf", "transformers")
LSP = ("lsprotocol", "pygls", "pytest_lsp")

# package -> names it must not import (a name forbids the module and everything under it).
# No package imports tests/: it is not installed, and a fixture the benchmarks need lives
# in evaluation (evaluation.tiny_model).
FORBIDDEN = {
    "lsp_server": TORCH + ("diffusion_core", "evaluation", "diffill", "training", "tests"),
    "grammars": TORCH + LSP + ("lsp_server", "diffusion_core", "evaluation", "diffill", "training", "tests"),
    # the core is product code only: benchmarks, fixtures and training live elsewhere and
    # import it, never the other way round.
    "diffusion_core": LSP + ("tree_sitter", "grammars", "lsp_server", "evaluation", "diffill", "training", "tests"),
    "evaluation": ("diffill", "tests"),
    "diffill": ("evaluation", "tests"),
    # training cuts editor-shaped holes with grammars' span sampler: it may import both
    # diffusion_core and grammars, but nothing editor-facing.
    "training": LSP + ("lsp_server", "evaluation", "diffill", "tests"),
}
# the one module of diffusion_core that the editor side may import
ALLOWED = {"lsp_server": ("diffusion_core.protocol", "diffusion_core")}
# module -> names it may import against its package's rule. bench_hostile drives a real
# `diffill lsp` with the hostile suite's raw LSP client (so it runs from a checkout only).
EXCEPTIONS: dict[str, tuple[str, ...]] = {"evaluation.bench_hostile": ("tests.hostile.raw_lsp",)}

# diffusion_core's rooms, lowest first (diffusion_core/__init__.py): a room may import the
# rooms before it and the two top-level modules, never a room after it; the top-level
# modules (protocol, errors) import no room.
ROOMS = ("network", "tokens", "loading", "generation", "serving")
CORE_TOP = ("__init__.py", "protocol.py", "errors.py")
# room -> the only modules of the rooms below it that it may import: serving reaches the
# model through the engine contract alone.
ROOM_DOORS = {"serving": ("diffusion_core.generation.engine",)}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """Every module a file imports, as absolute dotted names ("from a import b" gives a and a.b)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    # `if TYPE_CHECKING:` imports never run: annotations only, not an arrow between modules.
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and _is_type_checking(block.test)
                   for stmt in block.body for n in ast.walk(stmt)}
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def sources() -> dict[str, tuple[Path, set[str]]]:
    return {module_name(p): (p, imported(p)) for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_each_package_imports_only_what_it_may():
    bad = []
    for mod, (path, names) in sources().items():
        pkg = mod.split(".")[0]
        for name in sorted(names):
            if name in ALLOWED.get(pkg, ()) or any(_under(name, a) for a in ALLOWED.get(pkg, ()) if a != "diffusion_core"):
                continue
            if any(_under(name, e) for e in EXCEPTIONS.get(mod, ())):
                continue
            if any(_under(name, f) for f in FORBIDDEN[pkg]):
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not bad, "\n".join(bad)


def test_diffusion_core_holds_no_benchmark_fixture_or_training_module():
    """Benchmarks are `diffill bench` entries in evaluation/, the tiny model is
    evaluation.tiny_model, test-only references live in tests/, the BPE trainer in training/."""
    names = {p.stem for p in (ROOT / "diffusion_core").rglob("*.py")}
    assert not {n for n in names if n.startswith(("bench", "test_", "check_")) or "fixture" in n or "tiny" in n}
    assert not names & {"bpe", "reference", "references"}
    # test-only references live beside their tests (tests/checkpoints/reference_sampler.py,
    # tests/service/frame_decoder.py), never in the product
    defined = {node.name for p in (ROOT / "diffusion_core").rglob("*.py")
               for node in ast.parse(p.read_text(encoding="utf-8")).body
               if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    assert not {n for n in defined if n.endswith("_reference") or n == "FrameDecoder"}


def room_of(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if parts[0] == "diffusion_core" and len(parts) > 1 and parts[1] in ROOMS else None


def test_each_room_of_diffusion_core_imports_only_the_rooms_below_it():
    bad = []
    for mod, (path, names) in sources().items():
        if not _under(mod, "diffusion_core"):
            continue
        here = room_of(mod)
        rank = ROOMS.index(here) if here else -1
        for name in sorted(names):
            there = room_of(name)
            if there is None or there == here:
                continue
            if ROOMS.index(there) > rank:
                bad.append(f"{path.relative_to(ROOT)} imports {name}: {there}/ is not below {here + '/' if here else 'a top-level module'}")
            elif here in ROOM_DOORS and name != f"diffusion_core.{there}" and not any(
                    _under(name, door) for door in ROOM_DOORS[here]):
                bad.append(f"{path.relative_to(ROOT)} imports {name}: {here}/ may import only {ROOM_DOORS[here]}")
    assert not bad, "\n".join(bad)


def test_every_diffusion_core_module_lives_in_a_room():
    """Only protocol and errors stay at the top; the rooms are the packages under it, and a
    room's __init__ imports nothing (callers import the real module paths)."""
    core = ROOT / "diffusion_core"
    assert {p.name for p in core.glob("*.py")} == set(CORE_TOP)
    assert {p.name for p in core.iterdir() if (p / "__init__.py").is_file()} == set(ROOMS)
    assert not [room for room in ROOMS if imported(core / room / "__init__.py")]
    assert not imported(core / "__init__.py")


def test_protocol_imports_only_the_standard_library_and_msgpack():
    names = imported(ROOT / "diffusion_core" / "protocol.py")
    top = {n.split(".")[0] for n in names}
    assert top <= set(sys.stdlib_module_names) | {"msgpack", "__future__"}, top


def test_no_import_cycles():
    """Between the modules of the product (lazy imports included): Tarjan's SCCs."""
    mods = sources()
    graph = {m: {n for n in names if n in mods and n != m} for m, (_, names) in mods.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, cycles


def test_module_names_are_unique_across_packages():
    """A module name means one thing: no two ``scheduler.py`` for unrelated jobs."""
    seen: dict[str, list[str]] = {}
    for mod in sources():
        leaf = mod.rsplit(".", 1)[-1]
        if leaf not in ("__init__", "__main__", "cli"):
            seen.setdefault(leaf, []).append(mod)
    dup = {k: v for k, v in seen.items() if len(v) > 1}
    assert not dup, dup


# Installed in the server process before anything else: torch and every diffusion_core
# module but protocol fail to import, as on a machine without them.
_BLOCKER = """
import importlib.abc, runpy, sys
class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.split('.')[0]
        if top in {torch} or (top == 'diffusion_core' and name not in ('diffusion_core', 'diffusion_core.protocol')):
            raise ImportError('blocked in the language server process: ' + name)
        return None
sys.meta_path.insert(0, Blocked())
sys.argv = [{fakes!r}]
runpy.run_path({fakes!r}, run_name='__main__')
"""


async def test_the_language_server_runs_with_torch_blocked(tmp_path):
    fakes = str(ROOT / "tests" / "lsp_server" / "fakes.py")
    code = _BLOCKER.format(torch=set(TORCH), fakes=fakes)
    uri = "file:///tmp/diffill_blocked/a.py"
    async with session([sys.executable, "-c", code], fake={"text": "a + b"}, tmp=tmp_path) as client:
        st = await wait_ready(client)
        assert st["core"]["state"] == "ready"
        open_doc(client, uri, "def add(a, b):\n    return \n\nx = <|fill|>\n")
        res = await inline(client, uri, 1, 11)
        assert [i.insert_text for i in res.items] == ["a + b"]
        out = await execute(client, "diffill.fillHoles", [uri])
        assert out == {"filled": 1}
        st = await status(client)
        assert st["counters"]["answered"] == 1 and st["counters"].get("errors", 0) == 0


@pytest.mark.parametrize("pkg", ["lsp_server.server", "lsp_server.pipeline", "diffill.cli", "grammars.planner"])
def test_editor_side_modules_load_without_torch(pkg):
    import subprocess

    code = f"import sys, {pkg}; sys.exit(sorted(m for m in sys.modules if m.split('.')[0] in {set(TORCH)!r}) or 0)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=120, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr or proc.stdout
