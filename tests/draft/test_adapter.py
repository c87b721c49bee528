"""The mask-row adapter: no effect on clean rows, the training streams equal a plain masked
forward, and its file round-trips and rejects what does not fit."""
import random

import pytest
import torch

from diffusion_core.generation.draft_adapter import AdapterSpec, MaskAdapter, load_adapter, read_spec
from diffusion_core.errors import CoreError
from diffusion_core.network.model import Transformer
from evaluation.tiny_model import tiny_config
from training.draft import block_mask, chain_length, clean_pass, mask_pass

MASK = 7


def tiny(seed=0):
    torch.manual_seed(seed)
    m = Transformer(tiny_config(64))
    m.init_weights(std=0.2, generator=torch.Generator().manual_seed(seed))
    m.requires_grad_(False)
    return m


def adapter(m, seed=1):
    a = MaskAdapter(m, AdapterSpec(4, 8.0, 3, MASK))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in a.parameters():  # B starts at zero (a no-op): make the delta real
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return a


def causal(T):
    return torch.ones(T, T, dtype=torch.bool).tril()[None, None]


def test_clean_rows_are_the_base_exactly_and_mask_rows_change():
    m = tiny()
    ids = torch.tensor([[3, 9, 11, 4, 20, MASK, MASK, MASK]])
    pos = torch.arange(8)[None]
    base = m(ids, pos, causal(8))
    a = adapter(m).attach(m)
    with_adapter = m(ids, pos, causal(8))
    assert torch.equal(with_adapter[:, :5], base[:, :5])  # bit for bit: the rule, not a tolerance
    assert not torch.allclose(with_adapter[:, 5:], base[:, 5:])
    a.detach()
    assert torch.equal(m(ids, pos, causal(8)), base)


def test_on_packed_weights_clean_rows_stay_the_packed_base_exactly():
    from diffusion_core.network import quant

    m = tiny()
    rest = quant.install(m, quant.pack_state(dict(m.state_dict()), "int4"))
    m.load_state_dict(rest, strict=False)
    assert isinstance(m.layers[0].mlp.up_proj, quant.Int4Linear) and isinstance(m.embed_tokens, quant.Int8Embedding)
    ids = torch.tensor([[3, 9, 11, 4, 20, MASK, MASK, MASK]])
    pos = torch.arange(8)[None]
    base = m(ids, pos, causal(8))
    a = adapter(m).attach(m)
    assert len(a.A) == len(list(a._targets(m))) == 2 * 7  # every packed projection is a target
    with_adapter = m(ids, pos, causal(8))
    assert torch.equal(with_adapter[:, :5], base[:, :5])
    assert not torch.allclose(with_adapter[:, 5:], base[:, 5:])


def test_training_streams_equal_one_masked_forward():
    """clean_pass + mask_pass over several blocks == a full forward of each block after its anchor."""
    m = tiny()
    adapter(m).attach(m)
    ids = torch.tensor([3, 9, 11, 4, 20, 30, 31, 12, 14, 5])
    anchors, k = [2, 5, 7], 3
    kv, hidden = clean_pass(m, ids)
    fast = mask_pass(m, kv, anchors, k, MASK)
    for b, a in enumerate(anchors):
        seq = torch.cat((ids[: a + 1], torch.full((k,), MASK)))[None]
        ref = m(seq, torch.arange(a + 1 + k)[None], causal(a + 1 + k))[0, a + 1:]
        assert torch.allclose(fast[b * k:(b + 1) * k], ref, atol=1e-5)
    full = m(ids[None], torch.arange(10)[None], causal(10))[0]
    assert torch.allclose(m.lm_head(hidden), full, atol=1e-5)


def test_block_mask_keeps_blocks_apart():
    mk = block_mask([1, 3], 2, 5)
    assert mk.shape == (4, 9)
    assert mk[0, :5].tolist() == [True, True, False, False, False]
    assert mk[2, :5].tolist() == [True, True, True, True, False]
    assert mk[1, 5:].tolist() == [True, True, False, False]  # own block, causally
    assert mk[3, 5:].tolist() == [False, False, True, True]  # never the other block


def test_chain_length_counts_leading_agreements():
    agree = torch.tensor([[1, 1, 0, 1], [0, 1, 1, 1], [1, 1, 1, 1]], dtype=torch.bool)
    assert chain_length(agree) == pytest.approx((2 + 0 + 4) / 3)


def test_gradients_reach_only_the_adapter():
    m = tiny()
    a = MaskAdapter(m, AdapterSpec(4, 8.0, 3, MASK)).attach(m)
    kv, _ = clean_pass(m, torch.tensor([3, 9, 11, 4, 20]))
    mask_pass(m, kv, [1, 2], 2, MASK).sum().backward()
    assert all(p.grad is None for p in m.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in a.parameters())


def test_file_round_trip_and_errors(tmp_path):
    m = tiny()
    a = adapter(m)
    a.save(tmp_path / "a.safetensors", {"note": "x"}, torch.float32)
    spec, extra = read_spec(tmp_path / "a.safetensors")
    assert spec == a.spec and extra == {"note": "x"}
    m2 = tiny()
    b = load_adapter(tmp_path / "a.safetensors", m2)
    ids = torch.tensor([[3, 9, MASK, MASK]])
    a.attach(m)
    assert torch.equal(m(ids, torch.arange(4)[None], causal(4)), m2(ids, torch.arange(4)[None], causal(4)))
    assert b.spec.draft_len == 3
    with pytest.raises(CoreError, match="does not fit"):
        load_adapter(tmp_path / "a.safetensors", Transformer(tiny_config(64, hidden_size=32)))
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(CoreError, match="not a readable adapter"):
        read_spec(tmp_path / "junk.safetensors")
    spec_sha = MaskAdapter(m, AdapterSpec(4, 8.0, 3, MASK, "a" * 64))
    spec_sha.save(tmp_path / "s.safetensors")
    with pytest.raises(CoreError, match="trained on base"):
        load_adapter(tmp_path / "s.safetensors", tiny(), base_sha256="b" * 64)


def test_training_run_saves_resumes_and_keeps_the_best(tmp_path):
    """Three steps, then a resumed run to five: counters continue, files are safetensors/JSON."""
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "checkpoints"))
    pytest.importorskip("transformers")
    from test_causal import make_causal_lm

    from diffusion_core.loading.loader import load_model
    from training.draft import DraftConfig, train

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    rng = random.Random(0)
    lines = lambda: "".join(f"    x{rng.randint(0, 9)} = y + {rng.randint(0, 99)}\n" for _ in range(12))
    for split in ("train", "valid"):
        with open(corpus / f"{split}.jsonl", "w") as f:
            for _ in range(5):
                f.write(json.dumps({"text": "def f(y):\n" + lines() + "    return x1\n"}) + "\n")
    loaded = load_model(make_causal_lm(tmp_path / "m", seed=2), "cpu", torch.float32)
    cfg = DraftConfig(corpus=str(corpus), out=str(tmp_path / "run"), rank=2, draft_len=2, max_steps=3,
                      eval_every=2, eval_examples=2, save_every=1, device="cpu")
    run = train(cfg, loaded)
    counters = json.loads((run / "counters.json").read_text())
    assert counters["step"] == 3 and counters["tokens"] > 0
    assert [e["step"] for e in counters["evals"]] == [0, 2]
    assert (run / "best.safetensors").is_file() and (run / "optim.safetensors").is_file()
    before = load_file_tensors(run / "last.safetensors")
    cfg.max_steps = 5
    train(cfg, load_model(tmp_path / "m", "cpu", torch.float32))
    counters = json.loads((run / "counters.json").read_text())
    assert counters["step"] == 5 and [e["step"] for e in counters["evals"]] == [0, 2, 4]
    after = load_file_tensors(run / "last.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the resumed run trained on
    spec, _ = read_spec(run / "best.safetensors")
    assert spec.base_sha256 == "" and spec.draft_len == 2


def load_file_tensors(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def test_packaged_adapters_attach_only_to_their_own_base(tmp_path, monkeypatch, capsys):
    """A shipped adapter (diffusion_core/generation/adapters/) loads for the base it names, not another;
    a damaged one costs the drafts with one line on stderr, not the model."""
    from diffusion_core.generation import draft_adapter

    monkeypatch.setattr(draft_adapter, "PACKAGED", tmp_path)
    m = tiny()
    MaskAdapter(m, AdapterSpec(4, 8.0, 3, MASK, "a" * 64)).save(tmp_path / "a.safetensors")
    assert draft_adapter.packaged_for(tiny(), "b" * 64) is None
    assert draft_adapter.packaged_for(tiny(), None) is None
    got = draft_adapter.packaged_for(tiny(), "a" * 64)
    assert got is not None and got.spec.base_sha256 == "a" * 64
    (tmp_path / "a.safetensors").write_bytes(b"junk" * 10)
    assert draft_adapter.packaged_for(tiny(), "a" * 64) is None
    assert "mask drafts off" in capsys.readouterr().err
