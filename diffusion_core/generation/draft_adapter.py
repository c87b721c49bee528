"""The mask-row adapter: a causal coder's own block-diffusion drafter (issue 13).

Owns the low-rank deltas (LoRA, Hu et al. 2021) on every attention and MLP projection, the
learned embedding of the mask token, how they attach to a `Transformer` (forward hooks: no
parameter of the base is renamed or touched), and their file (safetensors + metadata).

The rule that makes it lossless: a delta applies ONLY to rows whose input id is the mask
token. Under causal attention a row never attends to a later one, and in every forward the
mask rows come after the clean ones (context, committed tokens, drafts under verification),
so every clean row -- its logits and the keys/values it leaves in the cache -- is computed by
the base exactly as without the adapter. The AR predictions the lossless mode verifies
against stay the base's, while the mask rows after them denoise the next block in parallel
(row j of k predicts the token j + 1 places past the last clean one; the clean row itself
predicts the first). Attaching the adapter to a model that never sees a mask id is a no-op.

Must not know: the decoding policy (causal.py), the training data or loss (training/).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from diffusion_core.errors import CoreError
from diffusion_core.network.quant import PACKED_MODULES

PACKAGED = Path(__file__).parent / "adapters"  # shipped adapters, one per base they were trained on
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
FORMAT = "diffill-mask-adapter/1"


@dataclass(frozen=True)
class AdapterSpec:
    rank: int
    alpha: float
    draft_len: int  # mask rows per forward the adapter was trained for
    mask_id: int
    base_sha256: str = ""  # the base GGUF it was trained on ("" for tests' tiny models)


class MaskAdapter(nn.Module):
    """LoRA pairs per (layer, projection) plus the mask token's learned input embedding."""

    def __init__(self, model: nn.Module, spec: AdapterSpec):
        super().__init__()
        self.spec = spec
        self.scale = spec.alpha / spec.rank
        self.A = nn.ParameterDict()
        self.B = nn.ParameterDict()
        for name, lin in self._targets(model):
            key = name.replace(".", "_")
            a = torch.empty(spec.rank, lin.in_features)
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))  # LoRA's init: A random, B zero, delta 0
            self.A[key] = nn.Parameter(a)
            self.B[key] = nn.Parameter(torch.zeros(lin.out_features, spec.rank))
        emb = model.embed_tokens  # an nn.Embedding, or packed (quant.Int8Embedding: rows by lookup)
        row = emb.row(spec.mask_id) if hasattr(emb, "row") else emb.weight[spec.mask_id]
        self.mask_embed = nn.Parameter(row.detach().clone().float())
        self._rows: torch.Tensor | None = None  # flat indices of this forward's mask rows
        self._handles: list = []

    @staticmethod
    def _targets(model: nn.Module):
        for name, mod in model.named_modules():
            if isinstance(mod, (nn.Linear, *PACKED_MODULES)) and name.rsplit(".", 1)[-1] in TARGETS:
                yield name, mod

    # -- attaching ---------------------------------------------------------------------

    def attach(self, model: nn.Module) -> "MaskAdapter":
        """Hook into model: the embedding finds the mask rows, each projection adds its delta there."""
        self.detach()
        ref = model.norm.weight  # dense in every weights scheme
        self.to(device=ref.device, dtype=ref.dtype)
        self._handles.append(model.embed_tokens.register_forward_hook(self._embed_hook))
        for name, lin in self._targets(model):
            key = name.replace(".", "_")
            self._handles.append(lin.register_forward_hook(self._delta_hook(key)))
        return self

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._rows = None

    def _embed_hook(self, mod, inputs, out):
        ids = inputs[0].reshape(-1)
        rows = (ids == self.spec.mask_id).nonzero().squeeze(1)
        self._rows = rows if rows.numel() else None
        if self._rows is None:
            return out
        flat = out.reshape(-1, out.shape[-1])
        flat = flat.index_copy(0, rows, self.mask_embed.to(flat.dtype).expand(rows.numel(), -1))
        return flat.view_as(out)

    def _delta_hook(self, key: str):
        def hook(mod, inputs, out):
            rows = self._rows
            if rows is None:
                return out
            x = inputs[0].reshape(-1, inputs[0].shape[-1])
            flat = out.reshape(-1, out.shape[-1])
            # Shapes only: reading a row index back (int(rows[-1])) would cost a device sync
            # per projection, 168 a forward; rows come from this forward's own ids.
            if x.shape[0] != flat.shape[0]:
                raise RuntimeError("mask adapter: a projection's rows do not line up with the embedded ids")
            delta = (x[rows] @ self.A[key].t()) @ self.B[key].t()
            return flat.index_add(0, rows, delta * self.scale).view_as(out)
        return hook

    # -- files -------------------------------------------------------------------------

    def save(self, path: str | Path, extra: dict | None = None, dtype: torch.dtype = torch.float16) -> None:
        """fp16 by default (the shipped file: half the package data); fp32 for a run's resume state."""
        from safetensors.torch import save_file

        tensors = {f"A.{k}": v.detach().to(dtype).contiguous().cpu() for k, v in self.A.items()}
        tensors |= {f"B.{k}": v.detach().to(dtype).contiguous().cpu() for k, v in self.B.items()}
        tensors["mask_embed"] = self.mask_embed.detach().float().contiguous().cpu()
        meta = {"format": FORMAT, "rank": str(self.spec.rank), "alpha": str(self.spec.alpha),
                "draft_len": str(self.spec.draft_len), "mask_id": str(self.spec.mask_id),
                "base_sha256": self.spec.base_sha256, "extra": json.dumps(extra or {})}
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        save_file(tensors, str(tmp), metadata=meta)
        tmp.replace(path)


def read_spec(path: str | Path) -> tuple[AdapterSpec, dict]:
    """An adapter file's spec and extra record, checked; one CoreError line when it is not one."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for a corrupt header
        raise CoreError(f"{path}: not a readable adapter file ({e.__class__.__name__})") from None
    if meta.get("format") != FORMAT:
        raise CoreError(f"{path}: not a diffill mask adapter (format {meta.get('format')!r}, expected {FORMAT!r})")
    try:
        spec = AdapterSpec(int(meta["rank"]), float(meta["alpha"]), int(meta["draft_len"]), int(meta["mask_id"]),
                           meta.get("base_sha256", ""))
        extra = json.loads(meta.get("extra") or "{}")
    except (KeyError, ValueError) as e:
        raise CoreError(f"{path}: adapter metadata {e} missing or malformed") from None
    if not (1 <= spec.rank <= 1024 and 1 <= spec.draft_len <= 64 and math.isfinite(spec.alpha)):
        raise CoreError(f"{path}: adapter metadata out of range (rank {spec.rank}, draft_len {spec.draft_len})")
    return spec, extra


def load_adapter(path: str | Path, model: nn.Module, base_sha256: str | None = None) -> MaskAdapter:
    """The adapter at path, shape-checked against model and attached to it."""
    from safetensors.torch import load_file

    spec, _ = read_spec(path)
    if base_sha256 is not None and spec.base_sha256 and spec.base_sha256 != base_sha256:
        raise CoreError(f"{path}: trained on base {spec.base_sha256[:12]}..., not this model ({base_sha256[:12]}...)")
    if not 0 <= spec.mask_id < model.config.vocab_size:
        raise CoreError(f"{path}: mask id {spec.mask_id} outside the model's vocabulary")
    adapter = MaskAdapter(model, spec)
    tensors = load_file(str(path))
    want = {f"A.{k}": tuple(v.shape) for k, v in adapter.A.items()} | {f"B.{k}": tuple(v.shape) for k, v in adapter.B.items()}
    want["mask_embed"] = tuple(adapter.mask_embed.shape)
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    if got != want:
        bad = sorted(set(got) ^ set(want)) or [k for k in want if got[k] != want[k]]
        raise CoreError(f"{path}: adapter does not fit this model (first mismatch: {bad[0]})")
    with torch.no_grad():
        for k, v in tensors.items():
            if not bool(torch.isfinite(v).all()):
                raise CoreError(f"{path}: adapter tensor {k} holds NaN/inf")
        for k in adapter.A:
            adapter.A[k].copy_(tensors[f"A.{k}"])
            adapter.B[k].copy_(tensors[f"B.{k}"])
        adapter.mask_embed.copy_(tensors["mask_embed"])
    adapter.requires_grad_(False)
    return adapter.attach(model)


def packaged_for(model: nn.Module, base_sha256: str | None) -> MaskAdapter | None:
    """The shipped adapter trained on this base (by its GGUF sha256), attached; None if none is.

    A damaged shipped file costs the drafts, not the model: one line on stderr, decoding goes
    on with context drafts (lossless either way).
    """
    import sys

    if not base_sha256 or not PACKAGED.is_dir():
        return None
    for path in sorted(PACKAGED.glob("*.safetensors")):
        try:
            spec, _ = read_spec(path)
            if spec.base_sha256 == base_sha256:
                return load_adapter(path, model, base_sha256)
        except CoreError as e:
            print(f"diffill: mask drafts off: {e}", file=sys.stderr)
    return None
