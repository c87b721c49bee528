"""Model configuration read from an HF-style config.json: the one place its keys and defaults live."""
from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

from diffusion_core.errors import CoreError

# Names of the special tokens our own layout needs, looked up in tokenizer.json.
DEFAULT_SPECIAL_TOKENS = {
    "mask": "<|mask|>",
    "eos": "<|endoftext|>",  # also the pad/end-of-hole token: a hole ends early by predicting it
    "bos": "<|bos|>",
    "suf": "<|suf|>",
    "pre": "<|pre|>",
    "mid": "<|mid|>",
    "hole": "<|hole|>",
}


def read_json(path: Path, required: bool = True) -> dict:
    """A JSON object from path; {} for an absent optional file; bad JSON is one CoreError line."""
    if not path.is_file():
        if required:
            raise CoreError(f"{path}: not found")
        return {}
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CoreError(f"{path}: not valid JSON ({e.__class__.__name__}: {str(e).splitlines()[0]})") from None
    except RecursionError:  # [[[[...]]]] deeper than the decoder's stack
        raise CoreError(f"{path}: not valid JSON (nested too deeply)") from None
    if not isinstance(d, dict):
        raise CoreError(f"{path}: expected a JSON object")
    return d


LAYOUTS = ("diffill", "natural", "causal")

# Inclusive ranges of the numeric fields. A config.json comes from the internet: a zero
# divides, a negative epsilon turns every norm into NaN, and an absurd size asks torch
# for terabytes, so every value is checked here, one line naming the key (issue 17).
_INT_RANGES = {
    "vocab_size": (1, 1 << 22),
    "hidden_size": (1, 1 << 16),
    "num_hidden_layers": (1, 1024),
    "num_attention_heads": (1, 1024),
    "intermediate_size": (1, 1 << 18),
    "num_key_value_heads": (0, 1024),
    "max_position_embeddings": (1, 1 << 24),
    "max_context": (1, 1 << 20),
}
_FLOAT_RANGES = {  # exclusive of 0: both divide or scale
    "rope_theta": (0.0, 1e12),
    "rms_norm_eps": (0.0, 1.0),
}
_BOOLS = ("tie_word_embeddings", "attention_bias", "logits_shift")
_STRINGS = ("layout", "model_type")


def _check_fields(cfg: "ModelConfig") -> None:
    """Type and range of every field; CoreError "config.json: key: ..." at the first bad one."""
    for key, (lo, hi) in _INT_RANGES.items():
        v = getattr(cfg, key)
        if not isinstance(v, int) or isinstance(v, bool):
            raise CoreError(f"config.json: {key}: expected an integer, got {type(v).__name__} {v!r}")
        if not lo <= v <= hi:
            raise CoreError(f"config.json: {key}: {v} is outside [{lo}, {hi}]")
    for key, (lo, hi) in _FLOAT_RANGES.items():
        v = getattr(cfg, key)
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise CoreError(f"config.json: {key}: expected a number, got {type(v).__name__} {v!r}")
        if not (lo < v <= hi):  # also false for NaN
            raise CoreError(f"config.json: {key}: {v} is outside ({lo}, {hi}]")
    for key in _BOOLS:
        if not isinstance(getattr(cfg, key), bool):
            raise CoreError(f"config.json: {key}: expected true or false, got {getattr(cfg, key)!r}")
    for key in _STRINGS:
        if not isinstance(getattr(cfg, key), str):
            raise CoreError(f"config.json: {key}: expected a string, got {getattr(cfg, key)!r}")
    sp = cfg.special_tokens
    if not isinstance(sp, dict) or not all(isinstance(k, str) and isinstance(v, (str, type(None))) for k, v in sp.items()):
        raise CoreError("config.json: special_tokens: expected an object of name -> token string")


@dataclass
class ModelConfig:
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    num_key_value_heads: int = 0  # 0: same as num_attention_heads
    max_position_embeddings: int = 4096
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = True
    attention_bias: bool = False  # q/k/v biases (Qwen2-shaped checkpoints)
    logits_shift: bool = True  # output i predicts token i+1 (Dream style); False: output i predicts token i (LLaDA)
    # "diffill": causal context + bidirectional hole region (exact cache); "natural": bidirectional;
    # "causal": a pretrained autoregressive FIM coder (Qwen2.5-Coder), holes decoded block-causally
    layout: str = "diffill"
    model_type: str = "diffill"
    max_context: int = 2048  # context tokens kept around the holes (see engine truncation policy)
    special_tokens: dict = field(default_factory=lambda: dict(DEFAULT_SPECIAL_TOKENS))

    def __post_init__(self) -> None:
        _check_fields(self)
        if not self.num_key_value_heads:
            self.num_key_value_heads = self.num_attention_heads
        if self.hidden_size % self.num_attention_heads:
            raise CoreError(f"config.json: hidden_size {self.hidden_size} is not divisible by num_attention_heads {self.num_attention_heads}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise CoreError("config.json: num_attention_heads must be a multiple of num_key_value_heads")
        if self.layout not in LAYOUTS:
            raise CoreError(f"config.json: layout {self.layout!r} is not one of {', '.join(LAYOUTS)}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, d: dict, source: str = "config.json") -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
        missing = [k for k in required if k not in d]
        if missing:
            raise CoreError(f"{source}: missing key {missing[0]!r}")
        kwargs = {k: v for k, v in d.items() if k in known}
        try:
            return cls(**kwargs)
        except TypeError as e:
            raise CoreError(f"{source}: {e}") from None
        except CoreError as e:  # __post_init__ names "config.json"; say which file
            raise CoreError(f"{source}: {str(e).removeprefix('config.json: ')}") from None

    @classmethod
    def load(cls, path: str | Path) -> "ModelConfig":
        path = Path(path)
        if not path.is_file():
            raise CoreError(f"{path}: config.json not found")
        return cls.from_dict(read_json(path), str(path))

    def to_dict(self) -> dict:
        return asdict(self)
