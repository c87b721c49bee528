"""Sampling parameters of one fill request: the one place their defaults live."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from diffusion_core.errors import CoreError
from diffusion_core.protocol import MAX_HOLE_TOKENS

# "ar" and "lossless" are for the causal layout (a pretrained AR coder, see `causal`):
# "ar" commits the model's greedy next token once per forward (AR-exact); "lossless"
# verifies drafts (context n-grams, the previous forward's own predictions) against it
# in the same forward and keeps the longest agreeing prefix: the same tokens, fewer forwards.
# "auto" (the default) picks per model and device (`Engine.auto_strategy`): on the causal
# layout "ar" on a CPU (a multi-row verify forward costs 2.1x+ a single-row one there, more
# than the drafts save) and "lossless" on a GPU; "threshold" on diffusion models.
STRATEGIES = ("auto", "threshold", "topk", "ar", "lossless")
CAUSAL_ONLY = ("ar", "lossless")
CONFIDENCES = ("prob", "margin", "entropy")
CACHE_MODES = ("auto", "exact", "dual", "none")
# Where the causal layout's drafts come from: "auto" uses the model's mask-row adapter when it
# has one (draft_adapter), then context n-grams; "context": n-grams and the previous forward's
# predictions only (the decoding benchmark compares the two).
DRAFT_SOURCES = ("auto", "context")
# Token healing (tokenizer.heal_point): "on" backs a prompt that ends inside a word or an
# operator up to its last token boundary and makes the fill re-create the removed text first.
HEAL_MODES = ("on", "off")
MAX_BUDGET = MAX_HOLE_TOKENS  # tokens in one hole (the one cap, protocol.py); more is rejected, not truncated
MIN_TEMPERATURE, MAX_TEMPERATURE = 1e-2, 100.0  # besides 0 (greedy)
MIN_TOP_P = 1e-6


@dataclass(frozen=True)
class FillParams:
    # "threshold": Fast-dLLM parallel decoding; "topk": LLaDA low-confidence remasking;
    # "ar", "lossless": the causal layout's AR-exact modes (see STRATEGIES)
    strategy: str = "auto"
    # topk: total steps per hole (0: one per token); threshold: a cap (0: none). Capped by
    # default: with bundled model v1, threshold 0.9 uncapped took 58 forwards per hole for
    # edit similarity 0.112; a cap of 8 took 7.6 forwards for 0.138 (docs/benchmarks.md).
    steps: int = 8
    threshold: float = 0.9  # Fast-dLLM tau: commit every masked position with confidence >= tau
    block_size: int = 32  # semi-autoregressive blocks inside a hole
    confidence: str = "prob"  # "prob" (max probability), "margin" (top1 - top2), "entropy" (exp(-H))
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int = 0
    cache: str = "auto"  # "exact" for models with a causal context, "dual" (approximate) for bidirectional ones
    drafts: str = "auto"  # causal layout: DRAFT_SOURCES
    heal: str = "on"  # HEAL_MODES

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise CoreError(f"params.strategy: {self.strategy!r} is not one of {', '.join(STRATEGIES)}")
        if self.confidence not in CONFIDENCES:
            raise CoreError(f"params.confidence: {self.confidence!r} is not one of {', '.join(CONFIDENCES)}")
        if self.cache not in CACHE_MODES:
            raise CoreError(f"params.cache: {self.cache!r} is not one of {', '.join(CACHE_MODES)}")
        if self.drafts not in DRAFT_SOURCES:
            raise CoreError(f"params.drafts: {self.drafts!r} is not one of {', '.join(DRAFT_SOURCES)}")
        if self.heal not in HEAL_MODES:
            raise CoreError(f"params.heal: {self.heal!r} is not one of {', '.join(HEAL_MODES)}")
        if not 0.0 <= self.threshold <= 1.0:
            raise CoreError(f"params.threshold: {self.threshold} is outside [0, 1]")
        if self.block_size < 1:
            raise CoreError(f"params.block_size: {self.block_size} must be at least 1")
        if self.steps < 0:
            raise CoreError(f"params.steps: {self.steps} must not be negative")
        # Finite, float32-sane ranges: temperature 1e-320 or inf turns logits into inf/NaN and
        # top_p 1e-300 rounds to 0 in float32 and drops every token (issue 17).
        if not (self.temperature == 0.0 or MIN_TEMPERATURE <= self.temperature <= MAX_TEMPERATURE):
            raise CoreError(f"params.temperature: {self.temperature} is neither 0 nor in [{MIN_TEMPERATURE}, {MAX_TEMPERATURE}]")
        if not MIN_TOP_P <= self.top_p <= 1.0:
            raise CoreError(f"params.top_p: {self.top_p} is outside [{MIN_TOP_P}, 1]")
        if not 0 <= self.seed < 2**63:
            raise CoreError(f"params.seed: {self.seed} is outside [0, 2^63)")

    @classmethod
    def from_dict(cls, d: dict | None) -> "FillParams":
        """Build from a wire/settings dict; unknown keys and wrong types are a CoreError."""
        if not d:
            return cls()
        if not isinstance(d, dict):
            raise CoreError("params: expected a map")
        known = {f.name: f.type for f in fields(cls)}
        kwargs = {}
        for key, value in d.items():
            if key not in known:
                raise CoreError(f"params: unknown key {key!r}")
            default = getattr(cls, key)
            if isinstance(default, bool) or not isinstance(value, (type(default), int)) or isinstance(value, bool):
                raise CoreError(f"params.{key}: expected {type(default).__name__}, got {type(value).__name__}")
            kwargs[key] = type(default)(value)
        return cls(**kwargs)

    def as_dict(self) -> dict:
        return asdict(self)
