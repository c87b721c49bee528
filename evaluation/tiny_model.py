"""Tiny random-weight model folders: the benchmarks' ``--tiny`` smoke runs, and the tests.

Owns a deterministic small tokenizer trained on ``SAMPLE`` and a few-layer model,
written as a real model folder so everything goes through the real loader. Figures
from it measure machinery (scheduling, caching), never completion quality.

Lives in evaluation, not in diffusion_core (the product holds no fixture) and not in
tests/ (the benchmarks' ``--tiny`` runs import it, and tests/ is not installed).
"""
from __future__ import annotations

from pathlib import Path

import torch

from diffusion_core.network.config import ModelConfig
from diffusion_core.loading.loader import save_model
from diffusion_core.network.model import Transformer
from training.bpe import train_bpe

# A little code, so a tiny tokenizer has real merges: Python (the checkpoint-layout
# fixtures in tests/ train on this part alone), then a line of a few other languages.
PYTHON_SAMPLE = '''
def add(a, b):
    return a + b

class Point:
    def __init__(self, x, y):
        self.x = x
        self.y = y

for i in range(10):
    if i % 2 == 0:
        print(i)
'''
SAMPLE = PYTHON_SAMPLE + '''
function add(a, b) { return a + b; }
fn main() { let x = 1; println!("{}", x); }
func main() { fmt.Println("hi") }
int main(void) { return 0; }
'''


def tiny_config(vocab_size: int, **overrides) -> ModelConfig:
    base = dict(vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, intermediate_size=128, max_position_embeddings=4096, max_context=2048)
    base.update(overrides)
    return ModelConfig(**base)


def make_tiny_model(folder: str | Path, seed: int = 0, vocab_size: int = 400, **overrides) -> Path:
    """Write config.json, tokenizer.json and model.safetensors of a tiny random model; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = train_bpe([SAMPLE] * 4, vocab_size=vocab_size, min_frequency=1)
    tok.save(str(folder / "tokenizer.json"))
    cfg = tiny_config(tok.get_vocab_size(), **overrides)
    torch.manual_seed(seed)
    model = Transformer(cfg)
    # A larger init than training uses, so a random model has peaked, seed-specific logits.
    model.init_weights(std=0.2, generator=torch.Generator().manual_seed(seed))
    save_model(model, folder)
    return folder
