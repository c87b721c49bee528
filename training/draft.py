"""Training the mask-row adapter: the default coder converted into its own block drafter.

    diffill train draft --corpus DIR --out RUN [--minutes 100] [--rank 16] [--draft-len 6]

Owns the conversion recipe of issue 13 for a causal-layout base (Qwen2.5-Coder-0.5B):
examples, the objective, the loop, save/resume and the validation figure. The adapter and its
no-op-on-clean-rows rule live in `diffusion_core.generation.draft_adapter`.

Examples are FIM frames cut from the corpus's train split (never benchmark data): a cursor
at a random column of a random line, a middle of whole lines after it, the prefix before it
(at most PREFIX_TOKENS) and the suffix after the middle (SUFFIX_BYTES, the editor's default
window), laid out exactly as the engine lays out a hole (`infill_formats.causal_context`).

Objective: block diffusion at the noise level decoding meets. In the causal layout's
lossless decoding the block after the last verified token is always wholly masked
(commits are contiguous), so each training block is k mask rows after an anchor a -- every
anchor of the middle, or ANCHORS of them -- attending to the clean tokens <= a and causally
to its own block, never to another block (a block-causal mask over many blocks at once).
Mask row j (at position a + j) is trained to put the base's own teacher-forced distribution
for the token at a + j + 1 (the base's logits at row a + j): distillation, so a draft is
accepted exactly when it is what the base would say, the quantity lossless decoding cashes.
Nothing else is trained and nothing else could drift: the base's rows are untouched by
construction (the AR-preserving term of Dream/Fast-dLLM is not needed here; it is exact).

Cost per example is one no-grad forward of the clean sequence (keys/values kept per layer)
plus forward and backward of the mask rows only: the clean rows carry no gradient, so they
are computed once, outside autograd. Adam state is saved in safetensors beside the adapter;
`--out` resumes. The best adapter by validation chain length is kept as best.safetensors.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from diffusion_core.tokens import infill_formats
from diffusion_core.generation.draft_adapter import AdapterSpec, MaskAdapter
from diffusion_core.network.model import Transformer, rope_cos_sin

PREFIX_TOKENS = 256  # clean context before the cursor: the drafts see the base's keys/values of it
SUFFIX_BYTES = 256  # lsp_server settings' context.suffixBytes default
MIDDLE_LINES = (2, 10)  # whole lines after the cursor's line (inclusive)
MIDDLE_TOKENS = 128
ANCHORS = 96  # blocks per example: the clean pass is paid once for all of them


@dataclass
class DraftConfig:
    corpus: str
    out: str
    rank: int = 16
    alpha: float = 32.0
    draft_len: int = 6
    lr: float = 1e-3
    warmup: int = 20
    minutes: float = 100.0
    max_steps: int = 100_000
    eval_every: int = 50
    eval_examples: int = 8
    save_every: int = 10
    device: str = "auto"  # a lent GPU trains this in minutes; the CPU run is what this machine allows
    threads: int = 1  # on 2 cores shared with other work, 1 thread ran a step 3x faster than 2 (measured)
    seed: int = 0
    init: str = ""  # an adapter file to start a new run from (e.g. an earlier run's best)


# -- examples ------------------------------------------------------------------------------


def cut_example(text: str, rng: random.Random) -> tuple[str, str, str] | None:
    """(prefix, middle, suffix) text of one FIM example, or None when the file has no room."""
    lines = text.splitlines(keepends=True)
    if len(lines) < 4:
        return None
    i = rng.randrange(1, len(lines) - 1)
    line = lines[i]
    body = line.rstrip("\n")
    indent = len(body) - len(body.lstrip())
    if len(body) <= indent:
        return None
    col = rng.randrange(indent, len(body))
    start = sum(len(l) for l in lines[:i]) + col
    j = min(len(lines), i + rng.randint(*MIDDLE_LINES))
    end = sum(len(l) for l in lines[:j]) - 1  # the middle stops before its last newline, as a hole does
    if end <= start:
        return None
    return text[:start], text[start:end], text[end:end + SUFFIX_BYTES]


def encode_example(tok, parts: tuple[str, str, str]) -> tuple[list[int], int] | None:
    """(ids of the frame + middle, index of <|fim_middle|>) or None when the middle is too short."""
    prefix, middle, suffix = parts
    p = tok.encode(prefix)[-PREFIX_TOKENS:]
    m = tok.encode(middle)[:MIDDLE_TOKENS]
    s = tok.encode(suffix)
    ctx = infill_formats.causal_context(p, s, tok.special)
    if len(m) < 4:
        return None
    return ctx + m, len(ctx) - 1


def anchors_of(n_tokens: int, mid_at: int, k: int, rng: random.Random, most: int = ANCHORS) -> list[int]:
    """Anchor rows a with a + k < n_tokens, from <|fim_middle|> on: the last clean row of a block."""
    cand = list(range(mid_at, n_tokens - k))
    if len(cand) > most:
        cand = sorted(rng.sample(cand, most))
    return cand


# -- the two streams -----------------------------------------------------------------------


@torch.no_grad()
def clean_pass(model: Transformer, ids: torch.Tensor):
    """Base forward of one clean sequence ids [T]: per-layer keys/values and the final hidden states."""
    T, dev = ids.shape[0], ids.device
    pos = torch.arange(T, device=dev)
    x = model.embed_tokens(ids)
    cos, sin = rope_cos_sin(pos, model.inv_freq, x.dtype)
    mask = torch.ones(T, T, dtype=torch.bool, device=dev).tril()
    kv = []
    for layer in model.layers:
        attn = layer.self_attn
        q, k, v = attn.project(layer.input_layernorm(x), cos, sin)
        kv.append((k, v))
        y = attn.attend(q, k, v, mask)
        x = x + attn.o_proj(y.transpose(0, 1).reshape(T, -1))
        x = x + layer.mlp(layer.post_attention_layernorm(x))
    return kv, model.norm(x)


def block_mask(anchors: list[int], k: int, T: int, device=None) -> torch.Tensor:
    """[M*k, T + M*k] bool: block m's rows see clean keys <= anchors[m] and their own block causally."""
    a = torch.tensor(anchors, device=device)
    M = len(anchors)
    clean = torch.arange(T, device=device)[None, :] <= a.repeat_interleave(k)[:, None]
    blk = torch.arange(M, device=device).repeat_interleave(k)
    off = torch.arange(k, device=device).repeat(M)
    own = (blk[:, None] == blk[None, :]) & (off[None, :] <= off[:, None])
    return torch.cat((clean, own), dim=1)


def mask_pass(model: Transformer, kv, anchors: list[int], k: int, mask_id: int) -> torch.Tensor:
    """Logits [M*k, V] of the mask rows after each anchor, against the clean keys/values kv."""
    T, dev = kv[0][0].shape[1], kv[0][0].device
    M = len(anchors)
    pos = (torch.tensor(anchors, device=dev).repeat_interleave(k) + torch.arange(1, k + 1, device=dev).repeat(M))
    ids = torch.full((M * k,), mask_id, dtype=torch.long, device=dev)
    x = model.embed_tokens(ids)  # the adapter's hook swaps in the learned mask embedding
    cos, sin = rope_cos_sin(pos, model.inv_freq, x.dtype)
    mask = block_mask(anchors, k, T, dev)
    R = M * k
    for layer, (ck, cv) in zip(model.layers, kv):
        attn = layer.self_attn
        q, kk, vv = attn.project(layer.input_layernorm(x), cos, sin)
        y = attn.attend(q, torch.cat((ck, kk), dim=1), torch.cat((cv, vv), dim=1), mask)
        x = x + attn.o_proj(y.transpose(0, 1).reshape(R, -1))
        x = x + layer.mlp(layer.post_attention_layernorm(x))
    return model.lm_head(model.norm(x))


def example_loss(model, ids: list[int], mid_at: int, k: int, mask_id: int, rng: random.Random):
    """(KL loss, top-1 agreement [M, k] bool) of one example; None when it has no anchor."""
    anchors = anchors_of(len(ids), mid_at, k, rng)
    if not anchors:
        return None
    dev = model.embed_tokens.weight.device
    t = torch.tensor(ids, dtype=torch.long, device=dev)
    kv, hidden = clean_pass(model, t)
    rows = (torch.tensor(anchors).repeat_interleave(k) + torch.arange(k).repeat(len(anchors)) + 1).to(dev)
    with torch.no_grad():
        teacher = torch.log_softmax(model.lm_head(hidden[rows]).float(), dim=-1)
    student = torch.log_softmax(mask_pass(model, kv, anchors, k, mask_id).float(), dim=-1)
    loss = F.kl_div(student, teacher, log_target=True, reduction="batchmean")
    agree = (student.argmax(-1) == teacher.argmax(-1)).view(len(anchors), k)
    return loss, agree


def chain_length(agree: torch.Tensor) -> float:
    """Mean drafts a verify forward would keep: the leading run of agreements per block."""
    return float(agree.long().cumprod(dim=1).sum(dim=1).float().mean())


# -- the loop ------------------------------------------------------------------------------


def _texts(path: Path) -> list[str]:
    return [json.loads(l)["text"] for l in open(path, encoding="utf-8")]


def _examples(tok, texts: list[str], rng: random.Random):
    while True:
        parts = cut_example(rng.choice(texts), rng)
        if parts is None:
            continue
        ex = encode_example(tok, parts)
        if ex is not None:
            yield ex


def _save_state(run: Path, adapter: MaskAdapter, opt, counters: dict) -> None:
    from safetensors.torch import save_file

    adapter.save(run / "last.safetensors", counters, torch.float32)
    state = {}
    for i, p in enumerate(adapter.parameters()):
        st = opt.state.get(p)
        if st:
            state[f"{i}.exp_avg"] = st["exp_avg"].contiguous()
            state[f"{i}.exp_avg_sq"] = st["exp_avg_sq"].contiguous()
    save_file(state, str(run / "optim.tmp"))
    (run / "optim.tmp").replace(run / "optim.safetensors")
    (run / "counters.tmp").write_text(json.dumps(counters))
    (run / "counters.tmp").replace(run / "counters.json")


def _load_weights(path: Path, adapter: MaskAdapter) -> None:
    from safetensors.torch import load_file

    saved = load_file(str(path))
    with torch.no_grad():
        for k in adapter.A:
            adapter.A[k].copy_(saved[f"A.{k}"])
            adapter.B[k].copy_(saved[f"B.{k}"])
        adapter.mask_embed.copy_(saved["mask_embed"])


def _resume(run: Path, adapter: MaskAdapter, opt) -> dict:
    from safetensors.torch import load_file

    if not (run / "counters.json").is_file():
        return {"step": 0, "examples": 0, "tokens": 0, "mask_rows": 0, "seconds": 0.0, "best": -1.0, "evals": []}
    counters = json.loads((run / "counters.json").read_text())
    _load_weights(run / "last.safetensors", adapter)
    state = load_file(str(run / "optim.safetensors"))
    for i, p in enumerate(adapter.parameters()):
        if f"{i}.exp_avg" in state:
            opt.state[p] = {"step": torch.tensor(float(counters["step"])), "exp_avg": state[f"{i}.exp_avg"],
                            "exp_avg_sq": state[f"{i}.exp_avg_sq"]}
    return counters


def evaluate(model, tok, adapter: MaskAdapter, texts: list[str], n: int, k: int, seed: int = 1234) -> dict:
    rng = random.Random(seed)
    agrees = []
    gen = _examples(tok, texts, rng)
    with torch.no_grad():
        while len(agrees) < n:
            ids, mid_at = next(gen)
            out = example_loss(model, ids, mid_at, k, adapter.spec.mask_id, random.Random(len(agrees)))
            if out is not None:
                agrees.append(out[1])
    agree = torch.cat(agrees).cpu()
    return {"chain": round(chain_length(agree), 4),
            "top1_by_offset": [round(float(x), 4) for x in agree.float().mean(0).tolist()]}


def train(cfg: DraftConfig, loaded=None) -> Path:
    """Train (or resume) into cfg.out; loaded: a `LoadedModel` to convert instead of the default
    base (tests use tiny ones; the adapter then records no base hash)."""
    from diffusion_core.loading.base_model import BASE_SHA256, load_base

    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run = Path(cfg.out)
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
    from diffusion_core.loading.loader import resolve_device

    base_sha = "" if loaded is not None else BASE_SHA256
    loaded = loaded or load_base(str(resolve_device(cfg.device)), torch.float32)
    model, tok = loaded.model, loaded.tokenizer
    model.requires_grad_(False)
    mask_id = tok.special.mask
    adapter = MaskAdapter(model, AdapterSpec(cfg.rank, cfg.alpha, cfg.draft_len, mask_id, base_sha)).attach(model)
    opt = torch.optim.AdamW(adapter.parameters(), lr=cfg.lr, weight_decay=0.0)
    counters = _resume(run, adapter, opt)
    if counters["step"] == 0 and cfg.init:
        _load_weights(Path(cfg.init), adapter)
    corpus = Path(cfg.corpus)
    train_texts, valid_texts = _texts(corpus / "train.jsonl"), _texts(corpus / "valid.jsonl")
    rng = random.Random(cfg.seed + counters["step"])
    gen = _examples(tok, train_texts, rng)
    t_start, seconds0, step0 = time.perf_counter(), counters["seconds"], counters["step"]
    if counters["step"] == 0:
        counters["evals"].append({"step": 0, **evaluate(model, tok, adapter, valid_texts, cfg.eval_examples, cfg.draft_len)})
        print(f"draft: step 0 valid {counters['evals'][-1]}", file=sys.stderr, flush=True)
    while counters["step"] < cfg.max_steps and (time.perf_counter() - t_start) / 60 < cfg.minutes:
        ids, mid_at = next(gen)
        out = example_loss(model, ids, mid_at, cfg.draft_len, mask_id, rng)
        if out is None:
            continue
        loss, agree = out
        step = counters["step"] + 1
        lr = cfg.lr * min(1.0, step / cfg.warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(adapter.parameters(), 1.0)
        opt.step()
        counters["step"] = step
        counters["examples"] += 1
        counters["tokens"] += len(ids)
        counters["mask_rows"] += agree.numel()
        counters["seconds"] = seconds0 + time.perf_counter() - t_start
        rate = (counters["step"] - step0) / max(1e-9, time.perf_counter() - t_start)
        print(f"draft: step {step} loss {loss.item():.3f} chain {chain_length(agree):.2f} "
              f"{rate * 60:.1f} steps/min tokens {counters['tokens']:,}", file=sys.stderr, flush=True)
        if step % cfg.eval_every == 0:
            ev = evaluate(model, tok, adapter, valid_texts, cfg.eval_examples, cfg.draft_len)
            counters["evals"].append({"step": step, **ev})
            print(f"draft: step {step} valid {ev}", file=sys.stderr, flush=True)
            if ev["chain"] > counters["best"]:
                counters["best"] = ev["chain"]
                adapter.save(run / "best.safetensors", {k: v for k, v in counters.items() if k != "evals"} | ev)
        if step % cfg.save_every == 0:
            _save_state(run, adapter, opt, counters)
    _save_state(run, adapter, opt, counters)
    return run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="diffill train draft",
                                 description="Train (or resume) the default model's mask-row drafting adapter.",
                                 epilog="example:\n  diffill train draft --corpus corpus --out runs/draft --minutes 100",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--out", required=True, help="run folder; an existing one resumes")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--init", default="", help="adapter file to start a new run from")
    for f in ("rank", "draft_len", "eval_every", "eval_examples", "threads", "max_steps", "seed"):
        ap.add_argument("--" + f.replace("_", "-"), type=int, default=getattr(DraftConfig, f))
    for f in ("alpha", "lr", "minutes"):
        ap.add_argument("--" + f, type=float, default=getattr(DraftConfig, f))
    args = vars(ap.parse_args(argv))
    cfg = DraftConfig(**args)
    run = train(cfg)
    print(f"draft adapter: {run / 'best.safetensors'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
