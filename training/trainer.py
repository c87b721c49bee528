"""The trainer: `diffill train run --config FILE`.

Owns the optimisation loop: data streaming from a corpus folder, AdamW with warmup then
cosine or WSD decay, gradient clipping, bf16 autocast on CUDA (fp32 on CPUs without bf16
units), deterministic seeds, save/resume (weights in safetensors, optimizer state in a
separate safetensors file plus a JSON of counters; no pickle), a progress line with loss,
tokens/s and ETA. Does not know the editor side.
"""
from __future__ import annotations

import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from diffusion_core.network.config import ModelConfig
from diffusion_core.errors import CoreError
from diffusion_core.loading.loader import read_tensors, resolve_device, save_model, weight_files
from diffusion_core.network.model import Transformer
from diffusion_core.tokens.tokenizer import Tokenizer
from .objective import collate, loss_fn, make_causal_example, make_example


@dataclass
class TrainConfig:
    corpus: str  # folder written by `diffill train corpus`
    tokenizer: str  # tokenizer.json
    out: str  # run folder: checkpoints and the final model
    hidden_size: int = 256
    num_hidden_layers: int = 6
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    intermediate_size: int = 704
    seq_len: int = 512
    max_context: int = 2048
    batch_size: int = 16
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    warmup_steps: int = 200
    schedule: str = "wsd"  # "cosine" or "wsd" (warmup-stable-decay: the last decay_frac decays)
    decay_frac: float = 0.2
    max_steps: int = 10000
    max_minutes: float = 0.0  # stop (and decay) by wall time instead, when > 0
    grad_clip: float = 1.0
    ar_weight: float = 0.5
    causal_frac: float = 0.0  # first this fraction of the steps: plain causal-LM windows, no holes (AR warm-up)
    max_holes: int = 3
    seed: int = 0
    device: str = "auto"
    threads: int = 0  # CPU threads for torch (0: torch's default); 1 is faster on a CPU shared with other work
    save_every: int = 500
    log_every: int = 10

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        try:
            d = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise CoreError(f"{path}: cannot read train config ({e})") from None
        known = {f.name for f in fields(cls)}
        bad = [k for k in d if k not in known]
        if bad:
            raise CoreError(f"{path}: unknown key {bad[0]!r}")
        return cls(**d)


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    lo = cfg.lr * cfg.min_lr_ratio
    if cfg.schedule == "wsd":
        decay_start = int(total * (1 - cfg.decay_frac))
        if step < decay_start:
            return cfg.lr
        frac = (step - decay_start) / max(1, total - decay_start)
        return lo + (cfg.lr - lo) * (1 - min(frac, 1.0))
    frac = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    return lo + 0.5 * (cfg.lr - lo) * (1 + math.cos(math.pi * min(frac, 1.0)))


def load_corpus(folder: str | Path, split: str = "train") -> list[tuple[str, str]]:
    path = Path(folder) / f"{split}.jsonl"
    if not path.is_file():
        raise CoreError(f"{path}: corpus split not found (run `diffill train corpus --out {folder}`)")
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            out.append((d["text"], d.get("lang", "python")))
    return out


def batches(files, tok: Tokenizer, cfg: TrainConfig, rng: random.Random, causal=lambda: False):
    """Endless stream of example lists, files drawn with replacement, deterministic under the seed.

    causal(): whether the next batch belongs to the causal warm-up phase.
    """
    sp = tok.special
    while True:
        batch = []
        plain = causal()
        while len(batch) < cfg.batch_size:
            text, lang = files[rng.randrange(len(files))]
            if plain:
                ex = make_causal_example(text, tok, sp, cfg.seq_len, rng)
            else:
                ex = make_example(text, lang, tok, sp, cfg.seq_len, rng, cfg.max_holes)
            if ex is not None:
                batch.append(ex)
        yield batch


def model_config(cfg: TrainConfig, tok: Tokenizer) -> ModelConfig:
    return ModelConfig(vocab_size=tok.vocab_size, hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_hidden_layers,
                       num_attention_heads=cfg.num_attention_heads, num_key_value_heads=cfg.num_key_value_heads,
                       intermediate_size=cfg.intermediate_size, max_position_embeddings=max(4096, cfg.max_context * 2),
                       max_context=cfg.max_context)


def save_checkpoint(model, opt, step: int, tokens: int, elapsed: float, cfg: TrainConfig, total: int) -> None:
    out = Path(cfg.out)
    save_model(model, out / "model", cfg.tokenizer)
    state = {}
    names = {id(p): n for n, p in model.named_parameters()}
    for group in opt.param_groups:
        for p in group["params"]:
            st = opt.state.get(p)
            if st:
                state[f"{names[id(p)]}.exp_avg"] = st["exp_avg"].detach().cpu().contiguous()
                state[f"{names[id(p)]}.exp_avg_sq"] = st["exp_avg_sq"].detach().cpu().contiguous()
                adam_step = float(st["step"])
    if state:
        save_file(state, str(out / "optimizer.safetensors"))
    meta = {"step": step, "tokens": tokens, "elapsed_s": elapsed, "total_steps": total,
            "adam_step": adam_step if state else 0.0, "config": asdict(cfg)}
    (out / "trainer_state.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")


def resume(model, opt, cfg: TrainConfig) -> dict:
    out = Path(cfg.out)
    meta_path = out / "trainer_state.json"
    if not meta_path.is_file():
        return {"step": 0, "tokens": 0, "elapsed_s": 0.0}
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    tensors = read_tensors(weight_files(out / "model"))
    own = model.state_dict()
    with torch.no_grad():
        for k, v in tensors.items():
            own[k].copy_(v)
    opt_file = out / "optimizer.safetensors"
    if opt_file.is_file():
        st = load_file(str(opt_file))
        for n, p in model.named_parameters():
            if f"{n}.exp_avg" in st:
                opt.state[p] = {"step": torch.tensor(meta["adam_step"]), "exp_avg": st[f"{n}.exp_avg"].to(p.device),
                                "exp_avg_sq": st[f"{n}.exp_avg_sq"].to(p.device)}
    return meta


def train(cfg: TrainConfig, log=lambda m: print(m, file=sys.stderr, flush=True)) -> Path:
    torch.manual_seed(cfg.seed)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    tok = Tokenizer(cfg.tokenizer, ModelConfig.__dataclass_fields__["special_tokens"].default_factory())
    mcfg = model_config(cfg, tok)
    model = Transformer(mcfg).to(device)
    model.init_weights(std=0.02, generator=torch.Generator().manual_seed(cfg.seed))
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8)
    meta = resume(model, opt, cfg)
    step, tokens, elapsed0 = meta["step"], meta["tokens"], meta["elapsed_s"]
    files = load_corpus(cfg.corpus)
    rng = random.Random(cfg.seed * 1_000_003 + step)  # a resumed run continues with fresh, reproducible data
    noise = torch.Generator().manual_seed(cfg.seed * 7919 + step)
    total = cfg.max_steps
    stream = batches(files, tok, cfg, rng, causal=lambda: step < cfg.causal_frac * total)
    log(f"train: {model.num_parameters() / 1e6:.2f}M parameters, {len(files)} files, device {device}, from step {step}")
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    t_start = time.perf_counter()
    ema = None
    while step < total:
        elapsed = elapsed0 + time.perf_counter() - t_start
        if cfg.max_minutes > 0:
            # Wall-time budget: re-estimate the total step count so the decay phase lands on time.
            done_frac = elapsed / (cfg.max_minutes * 60)
            if step > 20 and done_frac > 0:
                total = min(cfg.max_steps, max(step + 1, int(step / done_frac)))
        x, pos, mask, targets, weights = collate(next(stream), tok.special, noise, cfg.ar_weight)
        x, pos, mask, targets, weights = (t.to(device) for t in (x, pos, mask, targets, weights))
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total, cfg)
        with autocast:
            logits = model(x, pos, mask)
        loss = loss_fn(logits, targets, weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        step += 1
        tokens += int(x.numel())
        value = loss.item()
        ema = value if ema is None else 0.95 * ema + 0.05 * value
        if step % cfg.log_every == 0 or step == total:
            el = elapsed0 + time.perf_counter() - t_start
            rate = (tokens - meta["tokens"]) / max(1e-9, time.perf_counter() - t_start)
            eta = (total - step) * (time.perf_counter() - t_start) / max(1, step - meta["step"])
            log(f"step {step}/{total} loss {ema:.4f} lr {opt.param_groups[0]['lr']:.2e} "
                f"{rate:,.0f} tok/s elapsed {el / 60:.1f} min eta {eta / 60:.1f} min")
        if step % cfg.save_every == 0 or step == total:
            save_checkpoint(model, opt, step, tokens, elapsed0 + time.perf_counter() - t_start, cfg, total)
    return Path(cfg.out) / "model"
