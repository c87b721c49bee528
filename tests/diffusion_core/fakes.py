"""A fake, deterministic mask predictor: it knows the answer and how sure it is of each token.

It stands in for the Transformer inside a real Engine, so the engine's fast path and the
reference loop can be checked to recover a known answer under every strategy.
"""
import torch

from diffusion_core.network.model import Transformer


class FakePredictor(Transformer):
    """Predicts answer[p] for the token at absolute position p, with confidence conf[p]."""

    def __init__(self, cfg, answer: dict[int, int], conf: dict[int, float], shift: bool = True):
        super().__init__(cfg)
        self.answer, self.conf, self.shift = answer, conf, shift
        self.calls = 0

    def _logits_for(self, predicted_pos: torch.Tensor) -> torch.Tensor:
        V = self.config.vocab_size
        out = torch.full((len(predicted_pos), V), -30.0)
        for i, p in enumerate(predicted_pos.tolist()):
            if p in self.answer:
                c = self.conf[p]
                # Two candidates: the answer with probability ~c, token 0 with the rest.
                out[i, self.answer[p]] = 0.0
                out[i, 0] = float(torch.log(torch.tensor((1 - c) / c)))
        return out

    def forward_packed(self, ids, pos, segments, out_rows=None):
        for seg in segments:
            if seg.mode == "append":
                seg.cache.n += seg.end - seg.start
        if out_rows is None:
            out_rows = torch.arange(len(ids))
        self.calls += int(len(out_rows) > 0)
        return self._logits_for(pos[out_rows] + (1 if self.shift else 0))

    def forward(self, ids, pos, mask):
        self.calls += 1
        return self._logits_for(pos[0] + (1 if self.shift else 0))[None]
