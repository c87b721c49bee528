"""Hostile GGUF headers (issue 22 item 6): every count the file declares is bounded by its bytes.

Each file is refused in one line, fast and without the memory its header asks for: a 2^40-item
array (was 5.24 GB and 243 s), counts past the file, tensors that overlap or leave it (was
13 GB written and growing). Files are written by hand (struct) or patched from a tiny GGUF
written by the gguf package's own writer (tests/checkpoints/gguf_fixtures.py).
"""
from __future__ import annotations

import struct
import sys
import time
from pathlib import Path

import gguf
import pytest

from diffusion_core.errors import CoreError
from diffusion_core.loading.gguf_model import open_gguf, read_gguf

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "checkpoints"))
from gguf_fixtures import make_gguf  # noqa: E402

T = gguf.GGUFValueType


def gguf_string(s: bytes) -> bytes:
    return struct.pack("<Q", len(s)) + s


def header(n_tensors: int, n_kv: int) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv)


def kv_array(key: bytes, item_type: int, count: int, body: bytes = b"") -> bytes:
    return gguf_string(key) + struct.pack("<IIQ", T.ARRAY, item_type, count) + body


def refused(path: Path, match: str, within_s: float = 1.0) -> str:
    t0 = time.perf_counter()
    with pytest.raises(CoreError) as e:
        read_gguf(path)
    took = time.perf_counter() - t0
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and match in msg, msg
    assert took < within_s, f"{took:.2f} s: {msg}"
    return msg


@pytest.mark.parametrize("item_type", [T.UINT8, T.STRING, T.ARRAY])
def test_a_2_40_item_array_fails_at_once(tmp_path, item_type):
    p = tmp_path / "huge.gguf"
    p.write_bytes(header(0, 1) + kv_array(b"x.huge", item_type, 1 << 40) + bytes(16 << 20))
    msg = refused(p, "GGUF key 'x.huge' declares 1,099,511,627,776 items")
    assert "bytes are left" in msg


@pytest.mark.parametrize("which", ["kv", "tensors"])
def test_counts_past_the_file_fail_at_once(tmp_path, which):
    p = tmp_path / "count.gguf"
    p.write_bytes(header(1 << 40, 0) if which == "tensors" else header(0, 1 << 62))
    refused(p, "count declares")


def test_a_large_array_inside_the_file_is_one_view_not_one_per_item(tmp_path):
    """16 M uint8 items and 1 M strings really present: parsed in a second or two, all there."""
    n, m = 16 << 20, 1 << 20
    strings = b"".join(gguf_string(b"ab") for _ in range(m))
    p = tmp_path / "big.gguf"
    p.write_bytes(header(0, 2) + kv_array(b"x.bytes", T.UINT8, n, bytes(n)) + kv_array(b"x.strings", T.STRING, m,
                                                                                       strings))
    t0 = time.perf_counter()
    reader = open_gguf(p)
    assert time.perf_counter() - t0 < 5.0
    assert len(reader.fields["x.bytes"].contents()) == n
    assert reader.fields["x.strings"].contents()[-3:] == ["ab"] * 3
    refused(p, "missing GGUF key 'general.architecture'", within_s=10.0)


def test_a_string_past_the_end_names_the_key(tmp_path):
    p = tmp_path / "str.gguf"
    p.write_bytes(header(0, 1) + kv_array(b"tokenizer.ggml.tokens", T.STRING, 2, gguf_string(b"a")
                                          + struct.pack("<Q", 1 << 50)) + b"x" * 100)
    refused(p, "GGUF key 'tokenizer.ggml.tokens': a string of")


def test_arrays_of_arrays_are_bounded_in_depth(tmp_path):
    body = b""
    for _ in range(10):
        body = struct.pack("<IQ", T.ARRAY, 1) + body
    p = tmp_path / "deep.gguf"
    p.write_bytes(header(0, 1) + gguf_string(b"x.deep") + struct.pack("<I", T.ARRAY) + body
                  + struct.pack("<IQ", T.UINT8, 0) + bytes(64))
    refused(p, "nests arrays more than")


# -- tensors: inside the file, disjoint ---------------------------------------------------------

def tensor_offset_at(path: Path, name: str) -> tuple[int, int]:
    """(byte position of the tensor's offset field in its info, the offset it holds)."""
    r = gguf.GGUFReader(path)
    f = next(t.field for t in r.tensors if t.name == name)
    pos = f.offset + sum(int(p.nbytes) for p in f.parts[:5])
    return pos, int(f.parts[5][0])


def patch_offset(src: Path, out: Path, name: str, value: int) -> Path:
    pos, _ = tensor_offset_at(src, name)
    data = bytearray(src.read_bytes())
    data[pos: pos + 8] = struct.pack("<Q", value)
    out.write_bytes(bytes(data))
    return out


def test_tensors_sharing_bytes_are_refused(tmp_path):
    """The issue's 1,024 layers on one offset: two tensors whose ranges overlap, in one line."""
    tiny = make_gguf(tmp_path / "tiny.gguf")
    _, first = tensor_offset_at(tiny.path, "blk.0.ffn_up.weight")
    p = patch_offset(tiny.path, tmp_path / "shared.gguf", "blk.1.ffn_up.weight", first)
    refused(p, "overlap")


def test_a_tensor_outside_the_file_is_refused(tmp_path):
    tiny = make_gguf(tmp_path / "tiny.gguf")
    p = patch_offset(tiny.path, tmp_path / "outside.gguf", "output_norm.weight", 1 << 40)
    refused(p, "truncated GGUF file (tensor 'output_norm.weight' needs bytes")


def test_too_many_dimensions_are_refused(tmp_path):
    tiny = make_gguf(tmp_path / "tiny.gguf")
    data = bytearray(tiny.path.read_bytes())
    name = b"output_norm.weight"
    at = data.index(name) + len(name)
    data[at: at + 4] = struct.pack("<I", 1 << 31)
    p = tmp_path / "dims.gguf"
    p.write_bytes(bytes(data))
    refused(p, "dimensions (GGUF allows 4)")


def test_an_ordinary_file_reads_as_gguf_reads_it(tmp_path):
    """The bounded reader changes no value: every key and tensor as gguf's own reader has them."""
    tiny = make_gguf(tmp_path / "tiny.gguf")
    ours, theirs = open_gguf(tiny.path), gguf.GGUFReader(tiny.path)
    assert list(ours.fields) == list(theirs.fields)
    for key in theirs.fields:
        assert ours.fields[key].contents() == theirs.fields[key].contents(), key
    assert [(t.name, t.data_offset, t.n_bytes, t.data.tobytes()) for t in ours.tensors] == \
        [(t.name, t.data_offset, t.n_bytes, t.data.tobytes()) for t in theirs.tensors]
