"""What a fill request and its answer are: HoleSpec, StepInfo, FillStats, FillResult.

Owns the plain dataclasses the engine and the causal job both build and return (the
engine contract in docs/architecture.md names them from ``diffusion_core.generation.engine``, which
re-exports them). A module of its own so ``engine`` and ``causal`` share them without
importing each other. Must not know tensors or the request lifecycle.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class HoleSpec:
    """One hole: its token budget and its stop rule (the planner's StopRules, see
    docs/architecture.md): a hole ends at an end token, at its budget, or at its stop rule."""

    budget: int  # at most this many new tokens
    max_lines: int = 0  # > 0: end after this many newline-terminated lines with content (1: a line hole)
    dedent_below: int = -1  # >= 0: end before a later line whose content starts at a column below this
    # <= 0: end before a closing bracket that takes the fill's bracket depth below this (0: it
    # may close only what it opened; -n: n brackets opened before the hole); 1: no such rule
    min_depth: int = 1


@dataclass
class StepInfo:
    step: int
    committed: int
    masked_left: int


@dataclass
class FillStats:
    forward_passes: int = 0
    tokens_committed: int = 0
    tokens_per_forward: float = 0.0
    tokenize_ms: float = 0.0
    encode_ms: float = 0.0
    denoise_ms: float = 0.0
    context_tokens: int = 0
    reused_tokens: int = 0  # context tokens whose keys/values came from an earlier request
    truncated_tokens: int = 0
    cache: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class FillResult:
    texts: list[str]
    stats: FillStats
    token_ids: list[list[int]] = field(default_factory=list)
