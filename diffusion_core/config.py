"""Model configuration read from an HF-style config.json: the one place its keys and defaults live."""
from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

from .errors import CoreError

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
    if not isinstance(d, dict):
        raise CoreError(f"{path}: expected a JSON object")
    return d


LAYOUTS = ("diffill", "natural", "causal")


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

    @classmethod
    def load(cls, path: str | Path) -> "ModelConfig":
        path = Path(path)
        if not path.is_file():
            raise CoreError(f"{path}: config.json not found")
        return cls.from_dict(read_json(path), str(path))

    def to_dict(self) -> dict:
        return asdict(self)
