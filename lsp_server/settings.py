"""Editor settings for the diffill language server.

Owns: the nested, defaulted dataclasses that hold every user setting, their mapping
from the editor's camelCase JSON (``initializationOptions``, ``workspace/configuration``
section ``diffill``, ``workspace/didChangeConfiguration``), and the fallback to the
default of a field whose value is bad (the bad key is reported, never raised).

Must not know: LSP transport, pygls, the core, grammars (but for the one hole-marker
constant, ``grammars.holes.DEFAULT_MARKER``, the planner's default too). Pure data in,
data out.

Example editor JSON (every key optional)::

    {"model": {"path": "", "device": "auto", "weights": "auto"},
     "core": {"address": "", "token": "", "standby": true, "threads": 0},
     "fill": {"maxTokens": 64, "steps": null, "threshold": null, "strategy": null},
     "debounce": {"minMs": 0, "maxMs": 120},
     "context": {"prefixBytes": 6000, "suffixBytes": 256, "coldPrefixBytes": 768},
     "languages": [],
     "inline": {"enable": true, "maxItems": 3},
     "completion": {"enable": true},
     "holeMarker": "<|fill|>",
     "feedback": {"enable": true, "path": ""}}
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from diffusion_core.protocol import MAX_HOLE_TOKENS, WEIGHTS_SCHEMES
from grammars.holes import DEFAULT_MARKER

SECTION = "diffill"  # the workspace/configuration section holding these settings

# Keys editors keep in the same section for themselves (the extension's server
# command, vscode-languageclient's "trace.server"): accepted and ignored.
EDITOR_KEYS = frozenset({"command", "trace"})


@dataclass(frozen=True)
class ModelSettings:
    path: str = ""  # model folder or .gguf file; "" = the default model (Qwen2.5-Coder-0.5B)
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N" | "mps"
    # What the matmuls run on (protocol.WEIGHTS_SCHEMES): "auto" is packed int8 per channel on a
    # CPU and bf16 on a GPU; "float32" the exact reference (docs/benchmarks.md, "Packed weights").
    weights: str = "auto"


@dataclass(frozen=True)
class CoreSettings:
    # "" starts a private core subprocess; "unix:/path" or "tcp:host:port" shares one
    address: str = ""
    token: str = ""  # shared-core token, when the core asks for one
    # A private core keeps a warmed second core that takes over when it dies (a swap of
    # connections instead of a whole core start) for its private memory and one background
    # core start; off on machines short of either (docs/benchmarks.md, "Standby core").
    standby: bool = True
    # CPU threads of a private core (diffill core --threads): 0 chooses per kind of work by
    # measurement (diffusion_core/generation/threads.py; docs/benchmarks.md, "Threads").
    threads: int = 0


@dataclass(frozen=True)
class FillSettings:
    max_tokens: int = 64  # cap on the planner's budget per hole
    steps: int | None = None  # None: the core's default (diffusion_core/generation/params.py)
    threshold: float | None = None
    strategy: str | None = None


@dataclass(frozen=True)
class DebounceSettings:
    # The delay adapts to the typing rhythm between these bounds (lsp_server/debounce.py).
    min_ms: int = 0
    max_ms: int = 120


@dataclass(frozen=True)
class ContextSettings:
    # utf-8 bytes of text sent to the core around the hole; cut at line starts.
    prefix_bytes: int = 6000
    # Suffix bytes sent: a short suffix scored as well as a long one on held-out holes at a
    # fraction of the tokens a cold request encodes (docs/benchmarks.md, "Context windows":
    # measured before the packed weights and the suffix-first order, not since).
    suffix_bytes: int = 256
    # A request whose full window the core does not hold yet (a newly opened file, a cursor
    # moved elsewhere) sends this much prefix instead, on a CPU core, while the full window
    # is encoded in the background for the next request (lsp_server.windows); 0: off. A GPU
    # core encodes the full window in one short forward: never shortened there
    # (docs/benchmarks.md, "Context windows").
    cold_prefix_bytes: int = 768


@dataclass(frozen=True)
class InlineSettings:
    enable: bool = True
    max_items: int = 3  # items for an Invoked trigger; Automatic gets the best one


@dataclass(frozen=True)
class CompletionSettings:
    enable: bool = True  # textDocument/completion fallback for editors without inline


@dataclass(frozen=True)
class FeedbackSettings:
    enable: bool = True  # accept/reject log, local file only
    path: str = ""  # "" = $XDG_STATE_HOME/diffill/feedback.jsonl


@dataclass(frozen=True)
class Settings:
    model: ModelSettings = field(default_factory=ModelSettings)
    core: CoreSettings = field(default_factory=CoreSettings)
    fill: FillSettings = field(default_factory=FillSettings)
    debounce: DebounceSettings = field(default_factory=DebounceSettings)
    context: ContextSettings = field(default_factory=ContextSettings)
    languages: tuple[str, ...] = ()  # LSP languageIds to serve; empty = all
    inline: InlineSettings = field(default_factory=InlineSettings)
    completion: CompletionSettings = field(default_factory=CompletionSettings)
    hole_marker: str = DEFAULT_MARKER
    feedback: FeedbackSettings = field(default_factory=FeedbackSettings)

    def serves(self, language_id: str) -> bool:
        return not self.languages or language_id in self.languages

    def fill_params(self) -> dict[str, Any]:
        """The FillParams overrides to send to the core (unset ones are left out)."""
        f = self.fill
        out = {"steps": f.steps, "threshold": f.threshold, "strategy": f.strategy}
        return {k: v for k, v in out.items() if v is not None}


# Value checks beyond the type, per dotted snake_case path.
_CHECKS: dict[str, typing.Callable[[Any], bool]] = {
    "model.weights": lambda v: v in WEIGHTS_SCHEMES,
    "fill.max_tokens": lambda v: 1 <= v <= MAX_HOLE_TOKENS,
    "core.threads": lambda v: 0 <= v <= 1024,
    "fill.steps": lambda v: v is None or 1 <= v <= 1024,
    "fill.threshold": lambda v: v is None or 0.0 < v <= 1.0,
    "fill.strategy": lambda v: v is None or v in ("auto", "threshold", "topk", "ar", "lossless"),
    "debounce.min_ms": lambda v: 0 <= v <= 5000,
    "debounce.max_ms": lambda v: 0 <= v <= 5000,
    "context.prefix_bytes": lambda v: 64 <= v <= 1_000_000,
    "context.suffix_bytes": lambda v: 0 <= v <= 1_000_000,
    "context.cold_prefix_bytes": lambda v: v == 0 or 64 <= v <= 1_000_000,
    "inline.max_items": lambda v: 1 <= v <= 10,
    "hole_marker": lambda v: len(v) > 0,
}


def to_camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def to_snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def to_editor_json(obj: Any) -> Any:
    """Settings as the user writes them: camelCase keys, lists for tuples (the inverse
    of ``parse``; ``diffill/status`` shows this)."""
    if dataclasses.is_dataclass(obj):
        return {to_camel(f.name): to_editor_json(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple):
        return list(obj)
    return obj


def parse(data: Any, base: Settings | None = None) -> tuple[Settings, list[str]]:
    """Settings from editor JSON over ``base`` (defaults when None).

    Returns the settings and the camelCase dotted keys that were bad (unknown key,
    wrong type, value out of range); each bad field keeps its value from ``base``.
    """
    base = base or Settings()
    if data is None:
        return base, []
    bad: list[str] = []
    if not isinstance(data, dict):
        return base, ["<root>"]
    return _merge(base, data, "", bad), bad


def _merge(obj: Any, data: dict, prefix: str, bad: list[str]) -> Any:
    fields = {f.name: f for f in dataclasses.fields(obj)}
    hints = typing.get_type_hints(type(obj))
    changes: dict[str, Any] = {}
    for key, value in data.items():
        if not prefix and key in EDITOR_KEYS:
            continue
        name = to_snake(str(key))
        dotted_camel = f"{prefix}{key}"
        if name not in fields:
            bad.append(dotted_camel)
            continue
        current = getattr(obj, name)
        if dataclasses.is_dataclass(current):
            if isinstance(value, dict):
                changes[name] = _merge(current, value, f"{dotted_camel}.", bad)
            else:
                bad.append(dotted_camel)
            continue
        ok, converted = _convert(value, hints[name])
        path = _snake_path(prefix, name)
        if ok and _CHECKS.get(path, lambda v: True)(converted):
            changes[name] = converted
        else:
            bad.append(dotted_camel)
    return dataclasses.replace(obj, **changes) if changes else obj


def _snake_path(camel_prefix: str, name: str) -> str:
    parts = [to_snake(p) for p in camel_prefix.split(".") if p]
    return ".".join(parts + [name])


def _convert(value: Any, hint: Any) -> tuple[bool, Any]:
    """(ok, value) for a JSON value against a field's type hint."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return True, None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0])
    if hint is bool:
        return (isinstance(value, bool), value)
    if hint is int:
        return (isinstance(value, int) and not isinstance(value, bool), value)
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return (ok, float(value) if ok else value)
    if hint is str:
        return (isinstance(value, str), value)
    if typing.get_origin(hint) is tuple:
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        return (ok, tuple(value) if ok else value)
    return False, value
