"""Every server setting is declared by the VS Code extension and described in docs/lsp.md.

The settings dataclasses (lsp_server/settings.py) are the truth: a key the extension does
not declare cannot be set from VS Code's settings UI (and gets no validation there); one
docs/lsp.md does not describe is a setting nobody knows of. The extension also sends every
declared default to the server, so a declared default is the server's own, or its
difference is written down here.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from lsp_server.settings import Settings, _CHECKS, to_camel

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = json.loads((ROOT / "editors" / "vscode" / "package.json").read_text(encoding="utf-8"))
DECLARED = PACKAGE["contributes"]["configuration"]["properties"]
LSP_DOC = (ROOT / "docs" / "lsp.md").read_text(encoding="utf-8")
# VS Code has inline completion, so the extension turns the completion-item fallback off.
VSCODE_DEFAULTS = {"completion.enable": False}


def leaves(obj, prefix: str = "", snake: str = "") -> list[tuple[str, str, object]]:
    """(camelCase dotted key, snake_case dotted path, default) of every setting."""
    out = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key, path = prefix + to_camel(f.name), snake + f.name
        if dataclasses.is_dataclass(value):
            out += leaves(value, key + ".", path + ".")
        else:
            out.append((key, path, list(value) if isinstance(value, tuple) else value))
    return out


SETTINGS = leaves(Settings())


def test_the_walk_sees_every_setting():
    keys = {k for k, _, _ in SETTINGS}
    assert {"model.path", "core.token", "fill.strategy", "context.prefixBytes", "inline.maxItems",
            "feedback.path", "holeMarker", "languages"} <= keys
    assert {path for path in _CHECKS} <= {p for _, p, _ in SETTINGS}


@pytest.mark.parametrize("key, path, default", SETTINGS, ids=[k for k, _, _ in SETTINGS])
def test_vscode_declares_and_describes_every_setting(key, path, default):
    spec = DECLARED.get(f"diffill.{key}")
    assert spec is not None, f"editors/vscode/package.json declares no diffill.{key}"
    assert (spec.get("description") or spec.get("markdownDescription") or "").strip(), f"diffill.{key} has no description"
    assert spec.get("default") == VSCODE_DEFAULTS.get(key, default), f"diffill.{key}: default differs from the server's"


@pytest.mark.parametrize("key", [k for k, _, _ in SETTINGS])
def test_docs_lsp_describes_every_setting(key):
    table = LSP_DOC.split("## Settings", 1)[1].split("\n## ", 1)[0]
    assert f"`{key}`" in table, f"docs/lsp.md's settings table does not describe {key}"


def test_vscode_declares_nothing_the_server_does_not_know():
    server = {f"diffill.{k}" for k, _, _ in SETTINGS} | {"diffill.command"}
    assert set(DECLARED) - server == set()


def test_declared_bounds_are_the_servers_checks():
    """A value VS Code's settings UI accepts is one the server accepts (the bounds of
    settings._CHECKS, probed at the declared minimum and maximum)."""
    for key, path, _ in SETTINGS:
        spec = DECLARED[f"diffill.{key}"]
        check = _CHECKS.get(path)
        for bound in ("minimum", "maximum"):
            if bound in spec:
                assert check is not None and check(spec[bound]), f"diffill.{key} {bound} {spec[bound]}"
        if "enum" in spec and check is not None:
            assert all(check(v) for v in spec["enum"]), f"diffill.{key} enum"
