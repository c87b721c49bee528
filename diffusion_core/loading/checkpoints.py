"""Foreign diffusion checkpoints: recognise a model folder's layout and convert it into diffill's own model.

Owns format detection and conversion for the published masked-diffusion coders:

* Dream family (Dream, Dream-Coder, DiffuCoder, DreamOn: `model_type` "Dream"; Open-dCoder:
  `model_type` "qwen2" with a mask token): Qwen2-shaped weights named `model.layers.N...`,
  q/k/v biases, full bidirectional attention, logits shifted by one (output i predicts
  token i+1).
* Plain autoregressive FIM coders (`model_type` "qwen2" without a mask token, or "llama":
  an HF Qwen2ForCausalLM / LlamaForCausalLM folder such as Qwen2.5-Coder): the same
  Qwen2/Llama tensor names, causal attention, loaded as layout "causal" with the
  Qwen-style FIM tokens (`<|fim_prefix|>` ...) found by name in the vocabulary.
* LLaDA (`model_type` "llada"): OLMo-style names `model.transformer.blocks.N.{q_proj, k_proj,
  v_proj, attn_out, ff_proj, up_proj, ff_out, attn_norm, ff_norm}`, `ln_f`, `ff_out` as the
  LM head, unshifted logits.

`converter_for(folder)` returns the `convert(folder) -> (ModelConfig, special token names,
renamed tensors)` hook that `loader.load_model` takes, or None for our own format. Anything
not understood fails with one CoreError line naming the file and key. It reads only JSON
and safetensors: never executes code from the folder, never downloads. The per-family
infill layouts live in `infill_formats`; this module knows nothing of requests or sampling.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Callable

import torch

from diffusion_core.errors import CoreError
from diffusion_core.network.config import ModelConfig, read_json
from diffusion_core.tokens.infill_formats import CAUSAL_EOS_TOKEN, CAUSAL_MASK_TOKEN, CAUSAL_MAX_CONTEXT, FIM_TOKENS
from .weights import read_tensors, weight_files

log = logging.getLogger(__name__)

Converter = Callable[[Path], tuple[ModelConfig, dict, dict]]

# Context the natural-layout checkpoints were trained on (Dream and DreamOn: 2048 tokens,
# LLaDA: 4096); their configs advertise more positions (RoPE) than they were trained to use.
DREAM_TRAINED_CONTEXT = 2048
LLADA_TRAINED_CONTEXT = 4096

# Token strings the families use, for roles their config.json does not give as ids.
DREAM_EXPAND_TOKEN = "<|expand|>"  # DreamOn: a mask that becomes two masks
DIFFUCODER_PAD_TOKEN = "<|dlm_pad|>"  # DiffuCoder: the padding that ends its output
LLADA_MASK_TOKEN = "<|mdm_mask|>"  # LLaDA's mask when config.json has no mask_token_id

# Qwen2's pre-tokenizer split (the same regex its tokenizer.json carries), for folders that
# ship only vocab.json + merges.txt (the slow-tokenizer files).
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")


DREAM_MODEL_TYPES = ("dream",)
QWEN2_MODEL_TYPES = ("qwen2",)
LLAMA_MODEL_TYPES = ("llama",)
LLADA_MODEL_TYPES = ("llada",)
OWN_MODEL_TYPES = ("diffill",)


# -- reading the folder -----------------------------------------------------------------

def family_of(config: dict) -> str | None:
    """'diffill' | 'dream' | 'qwen2' | 'llama' | 'llada' from a config.json dict; None when it names no model_type."""
    mt = config.get("model_type")
    if mt is None:
        archs = config.get("architectures") or []
        if "LLaDAModelLM" in archs:
            return "llada"
        if "DreamModel" in archs:
            return "dream"
        return None
    mt = str(mt).lower()
    for family, names in (("diffill", OWN_MODEL_TYPES), ("dream", DREAM_MODEL_TYPES),
                          ("qwen2", QWEN2_MODEL_TYPES), ("llama", LLAMA_MODEL_TYPES), ("llada", LLADA_MODEL_TYPES)):
        if mt in names:
            return family
    return "unknown"


def converter_for(folder: str | Path) -> Converter | None:
    """The conversion hook for a foreign checkpoint folder; None for our own format.

    A folder whose config.json names a model_type no converter understands fails here,
    with the key and its value.
    """
    folder = Path(folder)
    path = folder / "config.json"
    if not path.is_file():
        return None  # the loader reports the missing config.json
    config = read_json(path)
    family = family_of(config)
    if family in (None, "diffill"):
        return None
    if family == "llama" or (family == "qwen2" and not has_mask_token(folder, config)):
        return convert_causal_lm  # Open-dCoder is the qwen2 folder WITH a mask token
    if family in ("dream", "qwen2"):
        return convert_dream
    if family == "llada":
        return convert_llada
    raise CoreError(f"{path}: model_type {config.get('model_type')!r} is not a checkpoint layout diffill understands "
                    "(diffill, Dream, qwen2, llama, llada)")


# -- special tokens ----------------------------------------------------------------------

def _token_content(value) -> str | None:
    """A tokenizer_config.json token entry: a string or {"content": ...}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


class _Vocab:
    """Token string <-> id of a folder's tokenizer, for turning config.json ids into names."""

    def __init__(self, folder: Path):
        from tokenizers import Tokenizer as _HFTokenizer

        path = folder / "tokenizer.json"
        try:
            self._tok = _HFTokenizer.from_file(str(path))
        except Exception as e:  # the tokenizers library raises a bare Exception on bad JSON
            raise CoreError(f"{path}: not a valid tokenizer.json ({str(e).splitlines()[0][:120]})") from None
        self.path = path
        tok_cfg = read_json(folder / "tokenizer_config.json", required=False)
        special_map = read_json(folder / "special_tokens_map.json", required=False)
        # Roles named by the tokenizer files (tokenizer_config.json wins over special_tokens_map.json).
        self.named = {role: _token_content(tok_cfg.get(f"{role}_token")) or _token_content(special_map.get(f"{role}_token"))
                      for role in ("mask", "bos", "eos", "pad")}

    def name_of(self, tid, key: str, source: Path) -> str:
        if not isinstance(tid, int) or isinstance(tid, bool):
            raise CoreError(f"{source}: {key} {tid!r} is not a token id")
        name = self._tok.id_to_token(tid)
        if name is None:
            raise CoreError(f"{source}: {key} {tid} is not in the vocabulary of {self.path}")
        return name

    def has(self, name: str | None) -> bool:
        return bool(name) and self._tok.token_to_id(name) is not None


def has_mask_token(folder: Path, config: dict) -> bool:
    """Whether config.json or the tokenizer files name a mask token (a diffusion checkpoint)."""
    if config.get("mask_token_id") is not None:
        return True
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        if _token_content(read_json(folder / name, required=False).get("mask_token")):
            return True
    return False


def _first_id(config: dict, key: str):
    v = config.get(key)
    if isinstance(v, list):  # eos_token_id may be a list; the first is the canonical end token
        v = v[0] if v else None
    return v


def resolve_special_names(folder: Path, config: dict, family: str) -> dict[str, str]:
    """Role -> token string for the layout and sampler (mask, eos, bos, pad, expand).

    Sources, in order: for mask and eos the ids in config.json (what the model was trained
    with), then the tokenizer files; for bos and pad the tokenizer files first, because Dream's
    config.json gives <|endoftext|> as bos while its infill prompts start with the
    tokenizer's <|beginoftext|>, and DiffuCoder pads with <|dlm_pad|>, not the config's pad id.
    """
    cfg_path = folder / "config.json"
    vocab = _Vocab(folder)

    def from_config(role: str) -> str | None:
        tid = _first_id(config, f"{role}_token_id")
        return None if tid is None else vocab.name_of(tid, f"{role}_token_id", cfg_path)

    def from_tokenizer(role: str) -> str | None:
        name = vocab.named.get(role)
        return name if vocab.has(name) else None

    names: dict[str, str] = {}
    for role in ("mask", "eos"):
        names[role] = from_config(role) or from_tokenizer(role) or ""
    for role in ("bos", "pad"):
        names[role] = from_tokenizer(role) or from_config(role) or ""
    if not names["mask"] and family == "llada" and vocab.has(LLADA_MASK_TOKEN):
        names["mask"] = LLADA_MASK_TOKEN
    if family == "qwen2":
        # Open-dCoder's prompts carry no BOS (Qwen2's tokenizer adds none); a qwen2 folder
        # without a mask token is an autoregressive Qwen2, not a diffusion checkpoint.
        names["bos"] = ""
        if not names["mask"]:
            raise CoreError(f"{folder / 'tokenizer_config.json'}: model_type 'qwen2' without a 'mask_token': "
                            "not a masked-diffusion checkpoint")
    if not names["mask"]:
        raise CoreError(f"{cfg_path}: no 'mask_token_id' (and no 'mask_token' in tokenizer_config.json)")
    if not names["eos"]:
        raise CoreError(f"{cfg_path}: no 'eos_token_id' (and no 'eos_token' in tokenizer_config.json)")
    if family in ("dream", "qwen2") and vocab.has(DIFFUCODER_PAD_TOKEN):
        names["pad"] = DIFFUCODER_PAD_TOKEN
    names["expand"] = DREAM_EXPAND_TOKEN if family == "dream" and vocab.has(DREAM_EXPAND_TOKEN) else ""
    return names


def variant_of(family: str, names: dict[str, str]) -> str:
    """The model_type diffill records: which infill format applies (see `infill_formats`)."""
    if family == "dream":
        if names.get("expand"):
            return "dreamon"
        if names.get("pad") == DIFFUCODER_PAD_TOKEN:
            return "diffucoder"
        return "dream"
    if family == "qwen2":
        return "open-dcoder"
    return family


# -- tokenizer.json for folders with only vocab.json + merges.txt ------------------------------

def ensure_tokenizer_json(folder: Path) -> None:
    """Write tokenizer.json from Qwen2's slow-tokenizer files when a Dream-family folder lacks it.

    Dream-family repositories may ship vocab.json + merges.txt + tokenizer_config.json only
    (a slow `DreamTokenizer`); our tokenizer reads tokenizer.json, so build the equivalent
    byte-level BPE once (Qwen2's normalizer, split regex and decoder) and store it beside them.
    """
    target = folder / "tokenizer.json"
    if target.is_file():
        return
    vocab_file, merges_file = folder / "vocab.json", folder / "merges.txt"
    if not (vocab_file.is_file() and merges_file.is_file()):
        raise CoreError(f"{target}: not found (and no vocab.json + merges.txt to build it from)")
    tok = build_qwen2_tokenizer(folder)
    try:
        tok.save(str(target))
    except OSError as e:
        raise CoreError(f"{target}: cannot write the tokenizer built from vocab.json + merges.txt ({e.strerror}); "
                        "make the folder writable once") from None
    log.info("%s: built from vocab.json + merges.txt", target)


def build_qwen2_tokenizer(folder: Path):
    """A `tokenizers.Tokenizer` equal to Qwen2's fast tokenizer, from vocab.json + merges.txt + added tokens."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    try:
        bpe = models.BPE.from_file(str(folder / "vocab.json"), str(folder / "merges.txt"))
    except Exception as e:
        raise CoreError(f"{folder / 'vocab.json'}: cannot build a BPE from vocab.json + merges.txt "
                        f"({str(e).splitlines()[0][:120]})") from None
    tok = Tokenizer(bpe)
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    added = read_json(folder / "tokenizer_config.json", required=False).get("added_tokens_decoder") or {}
    entries = []
    for tid, entry in added.items():
        content = _token_content(entry)
        if content is None or not str(tid).isdigit():
            raise CoreError(f"{folder / 'tokenizer_config.json'}: added_tokens_decoder[{tid!r}] is not understood")
        entries.append((int(tid), content, bool(entry.get("special", True)) if isinstance(entry, dict) else True))
    for tid, content, special in sorted(entries):
        if tok.get_vocab_size() != tid:
            raise CoreError(f"{folder / 'tokenizer_config.json'}: added token {content!r} has id {tid}, "
                            f"but the vocabulary before it has {tok.get_vocab_size()} entries")
        if special:
            tok.add_special_tokens([AddedToken(content, special=True, normalized=False)])
        else:
            tok.add_tokens([AddedToken(content, normalized=False)])
    return tok


# -- Dream family --------------------------------------------------------------------------

def _check_values(config: dict, path: Path, allowed: dict) -> None:
    """Fail naming the key when config.json asks for a feature our model does not have."""
    for key, ok in allowed.items():
        if key in config and not ok(config[key]):
            raise CoreError(f"{path}: {key} {config[key]!r} is not supported")


def _rope_theta(config: dict, default: float) -> float:
    if "rope_theta" in config:
        return float(config["rope_theta"])
    params = config.get("rope_parameters")  # transformers 5 writes RoPE settings here
    if isinstance(params, dict) and "rope_theta" in params:
        return float(params["rope_theta"])
    return default


def _no_rope_scaling(v) -> bool:
    return v is None or (isinstance(v, dict) and v.get("rope_type", v.get("type")) in (None, "default"))


def _require(config: dict, path: Path, *keys: str) -> None:
    for k in keys:
        if k not in config:
            raise CoreError(f"{path}: missing key {k!r}")


def dream_config(config: dict, path: Path, variant: str, names: dict, layout: str = "natural",
                 attention_bias: bool = True, trained_context: int = DREAM_TRAINED_CONTEXT) -> ModelConfig:
    """A Qwen2-shaped config.json (Dream family, and plain Qwen2/Llama for layout "causal")."""
    _require(config, path, "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    _check_values(config, path, {
        "hidden_act": lambda v: v == "silu",
        "use_sliding_window": lambda v: not v,
        "rope_scaling": _no_rope_scaling,
        "mlp_bias": lambda v: not v,
    })
    max_pos = int(config.get("max_position_embeddings", trained_context))
    return ModelConfig.from_dict(dict(
        vocab_size=config["vocab_size"], hidden_size=config["hidden_size"],
        num_hidden_layers=config["num_hidden_layers"], num_attention_heads=config["num_attention_heads"],
        num_key_value_heads=config.get("num_key_value_heads") or config["num_attention_heads"],
        intermediate_size=config["intermediate_size"], max_position_embeddings=max_pos,
        rope_theta=_rope_theta(config, 10000.0), rms_norm_eps=float(config.get("rms_norm_eps", 1e-6)),
        # Qwen2Config's default is untied; Open-dCoder (0.5B) ties, Dream 7B does not.
        tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
        attention_bias=attention_bias, logits_shift=True, layout=layout, model_type=variant,
        max_context=min(trained_context, max_pos), special_tokens=names,
    ), str(path))


def dream_tensors(tensors: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Qwen2 names (`model.layers.N...`, `lm_head.weight`) -> ours (no `model.` prefix)."""
    out = {}
    for key, t in tensors.items():
        if key.endswith("rotary_emb.inv_freq"):
            continue  # a buffer older transformers saved; we rebuild it from rope_theta
        if key == "lm_head.weight":
            out[key] = t
        elif key.startswith("model."):
            out[key[len("model."):]] = t
        else:
            raise CoreError(f"{source}: tensor {key!r} is not a Dream/Qwen2 name (expected 'model.*' or 'lm_head.weight')")
    return out


def convert_dream(folder: Path) -> tuple[ModelConfig, dict, dict]:
    """Dream, Dream-Coder, DiffuCoder, DreamOn, Open-dCoder."""
    folder = Path(folder)
    path = folder / "config.json"
    config = read_json(path)
    family = family_of(config)
    ensure_tokenizer_json(folder)
    names = resolve_special_names(folder, config, family)
    cfg = dream_config(config, path, variant_of(family, names), names)
    return cfg, names, dream_tensors(read_tensors(weight_files(folder)), str(folder))


# -- plain autoregressive FIM coders (layout "causal") --------------------------------------------

def causal_lm_names(folder: Path, config: dict) -> dict[str, str]:
    """Role -> token string of a Qwen2/Llama FIM coder: FIM markers by name, eos from config.json."""
    vocab = _Vocab(folder)
    cfg_path = folder / "config.json"
    names = {}
    for role, name in FIM_TOKENS.items():
        if not vocab.has(name):
            raise CoreError(f"{folder / 'tokenizer.json'}: no {name!r} token: a causal LM without FIM tokens "
                            "cannot fill holes")
        names[role] = name
    if not vocab.has(CAUSAL_MASK_TOKEN):
        raise CoreError(f"{folder / 'tokenizer.json'}: no {CAUSAL_MASK_TOKEN!r} token for the hole placeholder")
    names["mask"] = CAUSAL_MASK_TOKEN
    eos = _first_id(config, "eos_token_id")
    names["eos"] = (vocab.name_of(eos, "eos_token_id", cfg_path) if eos is not None
                    else vocab.named.get("eos") if vocab.has(vocab.named.get("eos")) else CAUSAL_EOS_TOKEN)
    if not vocab.has(names["eos"]):
        raise CoreError(f"{cfg_path}: no 'eos_token_id' (and no {CAUSAL_EOS_TOKEN!r} token)")
    names["bos"] = ""  # Qwen2's FIM prompts carry no BOS
    return names


def convert_causal_lm(folder: Path) -> tuple[ModelConfig, dict, dict]:
    """HF Qwen2ForCausalLM / LlamaForCausalLM folders: a pretrained AR FIM coder."""
    folder = Path(folder)
    path = folder / "config.json"
    config = read_json(path)
    family = family_of(config)
    if family == "qwen2":
        ensure_tokenizer_json(folder)
    elif not (folder / "tokenizer.json").is_file():
        raise CoreError(f"{folder / 'tokenizer.json'}: not found")
    names = causal_lm_names(folder, config)
    if family == "llama":
        # Llama's attention_bias adds an o_proj bias too, which our network does not have.
        _check_values(config, path, {"attention_bias": lambda v: not v})
    bias = family == "qwen2"  # Qwen2 always has q/k/v biases, Llama none
    cfg = dream_config(config, path, family, names, layout="causal", attention_bias=bias,
                       trained_context=CAUSAL_MAX_CONTEXT)
    return cfg, names, dream_tensors(read_tensors(weight_files(folder)), str(folder))


# -- LLaDA ------------------------------------------------------------------------------------

# OLMo/LLaDA per-block names -> ours (LLaDALlamaBlock: x + attn_out(attn(attn_norm(x))), then
# x + ff_out(silu(ff_proj(ff_norm(x))) * up_proj(ff_norm(x))); so ff_proj is the SwiGLU gate).
LLADA_BLOCK_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "q_proj.weight": "self_attn.q_proj.weight",
    "q_proj.bias": "self_attn.q_proj.bias",
    "k_proj.weight": "self_attn.k_proj.weight",
    "k_proj.bias": "self_attn.k_proj.bias",
    "v_proj.weight": "self_attn.v_proj.weight",
    "v_proj.bias": "self_attn.v_proj.bias",
    "attn_out.weight": "self_attn.o_proj.weight",
    "ff_norm.weight": "post_attention_layernorm.weight",
    "ff_proj.weight": "mlp.gate_proj.weight",
    "up_proj.weight": "mlp.up_proj.weight",
    "ff_out.weight": "mlp.down_proj.weight",
}
LLADA_TOP_NAMES = {
    "model.transformer.wte.weight": "embed_tokens.weight",
    "model.transformer.ln_f.weight": "norm.weight",
    "model.transformer.ff_out.weight": "lm_head.weight",
}
_LLADA_BLOCK = re.compile(r"^model\.transformer\.blocks\.(\d+)\.(.+)$")


def llada_config(config: dict, path: Path, names: dict) -> ModelConfig:
    _require(config, path, "d_model", "n_heads", "n_layers")
    if "embedding_size" not in config and "vocab_size" not in config:
        raise CoreError(f"{path}: missing key 'vocab_size'")
    # Features of the OLMo code base LLaDA inherits that our network does not implement.
    _check_values(config, path, {
        "block_type": lambda v: v == "llama",
        "activation_type": lambda v: v == "silu",
        "layer_norm_type": lambda v: v == "rms",
        "layer_norm_with_affine": lambda v: v is True,
        "bias_for_layer_norm": lambda v: not v,
        "include_bias": lambda v: not v,
        "alibi": lambda v: not v,
        "rope": lambda v: v is True,
        "scale_logits": lambda v: not v,
        "attention_layer_norm": lambda v: not v,
        "input_emb_norm": lambda v: not v,
        "clip_qkv": lambda v: v is None,
        "block_group_size": lambda v: v == 1,
        "multi_query_attention": lambda v: not v,
        "rope_scaling": _no_rope_scaling,
    })
    d_model = int(config["d_model"])
    mlp = config.get("mlp_hidden_size") or int(config.get("mlp_ratio", 4)) * d_model
    max_pos = int(config.get("max_sequence_length", LLADA_TRAINED_CONTEXT))
    return ModelConfig.from_dict(dict(
        vocab_size=config.get("embedding_size") or config["vocab_size"], hidden_size=d_model,
        num_hidden_layers=config["n_layers"], num_attention_heads=config["n_heads"],
        num_key_value_heads=config.get("n_kv_heads") or config["n_heads"], intermediate_size=mlp,
        max_position_embeddings=max_pos, rope_theta=_rope_theta(config, 10000.0),
        rms_norm_eps=float(config.get("rms_norm_eps", 1e-5)),
        tie_word_embeddings=bool(config.get("weight_tying", False)),
        attention_bias=bool(config.get("include_qkv_bias", False)), logits_shift=False, layout="natural",
        model_type="llada", max_context=min(LLADA_TRAINED_CONTEXT, max_pos), special_tokens=names,
    ), str(path))


def llada_tensors(tensors: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    out = {}
    for key, t in tensors.items():
        if key in LLADA_TOP_NAMES:
            out[LLADA_TOP_NAMES[key]] = t
            continue
        m = _LLADA_BLOCK.match(key)
        if m is None or m.group(2) not in LLADA_BLOCK_NAMES:
            raise CoreError(f"{source}: tensor {key!r} is not a LLaDA name "
                            "(expected model.transformer.{wte,ln_f,ff_out} or blocks.N.*)")
        out[f"layers.{m.group(1)}.{LLADA_BLOCK_NAMES[m.group(2)]}"] = t
    return out


def convert_llada(folder: Path) -> tuple[ModelConfig, dict, dict]:
    folder = Path(folder)
    path = folder / "config.json"
    config = read_json(path)
    if not (folder / "tokenizer.json").is_file():
        raise CoreError(f"{folder / 'tokenizer.json'}: not found")
    names = resolve_special_names(folder, config, "llada")
    cfg = llada_config(config, path, names)
    return cfg, names, llada_tensors(read_tensors(weight_files(folder)), str(folder))
