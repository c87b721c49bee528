"""A GGUF header parsed within the bounds of its file: gguf's own reader, with every count checked first.

Owns the limits on what a GGUF header may ask of us before it has been read (issue 22: a
16 MB file declaring one 2^40-element uint8 array took 5.24 GB and 243 s to be refused, since
gguf's reader builds one numpy view per array element; a 44 MB file whose 1,024 layers share
one tensor offset wrote 13 GB and growing). `BoundedReader` is `gguf.GGUFReader` with:
  * key/value and tensor counts bounded (MAX_KV, MAX_TENSORS) and by the bytes left;
  * array lengths bounded by the bytes left before any element is parsed; a numeric array
    read as one numpy view, a string array scanned in one pass into bytes objects (decoded
    when asked), so time and memory grow with the file's bytes, not with what it declares;
  * arrays of arrays at most MAX_NESTING deep and MAX_NESTED_ITEMS long;
  * every tensor's byte range inside the file and disjoint from the others, so what a
    conversion writes is bounded by the file (no two tensors share bytes).
Anything out of bounds is one CoreError line naming the file and the key or tensor.

Must not know diffill's model (gguf_model maps names and builds configs) or where files come
from. Reads through `self.data[a:b]`, as gguf's reader does (gguf_model.PartsBuffer).
"""
from __future__ import annotations

import array
import struct
import sys
from typing import Any

import gguf
import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

from diffusion_core.errors import CoreError

MAX_KV = 1 << 16  # llama.cpp files carry ~20-60 keys
MAX_TENSORS = 1 << 16  # a 0.5B model has 290; the largest open models a few thousand
MAX_NESTING = 4
MAX_NESTED_ITEMS = 1 << 12
MAX_DIMS = 4  # GGML_MAX_DIMS
# The fewest bytes one item can take, so a count can be checked against the bytes left:
# a key/value (name length, value type, a one-byte value), a tensor info (name length,
# n_dims, type, offset), an array (its item type and length).
MIN_KV_BYTES = 8 + 4 + 1
MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8
MIN_ARRAY_BYTES = 4 + 8
STRING_WINDOW = 1 << 20  # bytes of a string array scanned per view (a copy only across part boundaries)


class StringArray:
    """A GGUF array of strings: their bytes joined in one buffer and where each ends (8 bytes
    an item, not a Python object), decoded when read; `contents` as ReaderField's."""

    def __init__(self, offset: int, name: str, parts: list, blob: bytearray, ends: array.array):
        self.offset, self.name, self.parts, self.blob, self.ends = offset, name, parts, blob, ends
        self.types = [GGUFValueType.ARRAY, GGUFValueType.STRING]
        self.data: list[int] = []

    def _item(self, i: int) -> str:
        return self.blob[self.ends[i - 1] if i else 0: self.ends[i]].decode("utf-8")

    def contents(self, index_or_slice: int | slice = slice(None)) -> Any:
        if isinstance(index_or_slice, int):
            return self._item(range(len(self.ends))[index_or_slice])
        return [self._item(i) for i in range(len(self.ends))[index_or_slice]]


class BoundedReader(gguf.GGUFReader):
    """gguf.GGUFReader whose every count is bounded by the file before it is used (module docstring)."""

    _key = ""  # the key whose value is being parsed, for error lines
    _depth = 0

    def _where(self) -> str:
        buffer = getattr(self, "_buffer", None)
        return getattr(buffer, "name", "GGUF file")

    def _left(self, offs: int) -> int:
        return len(self.data) - offs

    def _bounded(self, count: int, each: int, offs: int, what: str, cap: int | None = None) -> int:
        count = int(count)
        if count * each > self._left(offs):
            raise CoreError(f"{self._where()}: truncated GGUF file ({what} declares {count:,} items, at least "
                            f"{count * each:,} bytes; {self._left(offs):,} bytes are left)")
        if cap is not None and count > cap:
            raise CoreError(f"{self._where()}: {what} declares {count:,} items, more than diffill reads ({cap:,})")
        return count

    # -- key/values -----------------------------------------------------------------------------

    def _build_fields(self, offs: int, count: int) -> int:
        count = self._bounded(count, MIN_KV_BYTES, offs, "the header's key/value count", MAX_KV)
        for _ in range(count):
            orig_offs = offs
            kv_klen, kv_kdata = self._get_str(offs)
            offs += int(kv_klen.nbytes + kv_kdata.nbytes)
            raw_kv_type = self._get(offs, np.uint32)
            offs += int(raw_kv_type.nbytes)
            name = bytes(kv_kdata).decode("utf-8")
            self._key = name
            head = [kv_klen, kv_kdata, raw_kv_type]
            if int(raw_kv_type[0]) == GGUFValueType.ARRAY and self._item_type(offs) == GGUFValueType.STRING:
                size, field = self._string_array(orig_offs, name, head, offs)
                self._push_field(field, skip_sum=True)
            else:
                size, parts, idxs, types = self._get_field_parts(offs, raw_kv_type[0])
                self._push_field(gguf.ReaderField(orig_offs, name, head + parts, [i + len(head) for i in idxs], types),
                                 skip_sum=True)
            offs += size
        self._key = ""
        return offs

    def _item_type(self, offs: int) -> int:
        return int(self._get(offs, np.uint32)[0])

    def _get_str(self, offset: int):
        slen = self._get(offset, np.uint64)
        if int(slen[0]) > self._left(offset + 8):
            raise CoreError(f"{self._where()}: truncated GGUF file (a string of {int(slen[0]):,} bytes at byte "
                            f"{offset:,}{f' in key {self._key!r}' if self._key else ''})")
        return slen, self._get(offset + 8, np.uint8, slen[0])

    def _get_field_parts(self, orig_offs: int, raw_type: int):
        if int(raw_type) != GGUFValueType.ARRAY:
            return super()._get_field_parts(orig_offs, raw_type)
        raw_itype = self._get(orig_offs, np.uint32)
        alen = self._get(orig_offs + 4, np.uint64)
        offs = orig_offs + MIN_ARRAY_BYTES
        itype = int(raw_itype[0])
        key = f"GGUF key {self._key!r}"
        nptype = self.gguf_scalar_to_np.get(GGUFValueType(itype)) if itype in set(GGUFValueType) else None
        if nptype is not None:  # one view of every element, not one per element
            n = self._bounded(alen[0], np.dtype(nptype).itemsize, offs, key)
            values = self._get(offs, nptype, n)
            return MIN_ARRAY_BYTES + int(values.nbytes), [raw_itype, alen, values], [2], [
                GGUFValueType.ARRAY, GGUFValueType(itype)]
        if itype == GGUFValueType.STRING:  # inside an array of arrays: rare, and bounded below
            n = self._bounded(alen[0], 8, offs, key, MAX_NESTED_ITEMS)
        elif itype == GGUFValueType.ARRAY:
            if self._depth >= MAX_NESTING:
                raise CoreError(f"{self._where()}: {key} nests arrays more than {MAX_NESTING} deep")
            n = self._bounded(alen[0], MIN_ARRAY_BYTES, offs, key, MAX_NESTED_ITEMS)
        else:
            raise CoreError(f"{self._where()}: {key} has arrays of unknown value type {itype}")
        self._depth += 1
        try:
            return super()._get_field_parts(orig_offs, raw_type)  # per element, n bounded above
        finally:
            self._depth -= 1

    def _string_array(self, orig_offs: int, name: str, head: list, offs: int) -> tuple[int, StringArray]:
        """A top-level array of strings (tokenizer.ggml.tokens, .merges) in one scan."""
        raw_itype = self._get(offs, np.uint32)
        alen = self._get(offs + 4, np.uint64)
        start = offs + MIN_ARRAY_BYTES
        n = self._bounded(alen[0], 8, start, f"GGUF key {name!r}")
        swapped = (self.byte_order == "S") == (sys.byteorder == "little")
        length = struct.Struct(">Q" if swapped else "<Q")
        blob, ends = bytearray(), array.array("Q")
        pos, end = start, len(self.data)
        view, base = memoryview(b""), pos
        for _ in range(n):
            at = pos - base
            if at + 8 > len(view):
                view, base, at = self._window(pos, 8), pos, 0
            size = length.unpack_from(view, at)[0]
            if size > end - pos - 8:
                raise CoreError(f"{self._where()}: truncated GGUF file (GGUF key {name!r}: a string of {size:,} "
                                f"bytes at byte {pos:,})")
            if at + 8 + size > len(view):
                view, base, at = self._window(pos, 8 + size), pos, 0
            blob += view[at + 8: at + 8 + size]
            ends.append(len(blob))
            pos += 8 + size
        return pos - offs, StringArray(orig_offs, name, head + [raw_itype, alen], blob, ends)

    def _window(self, pos: int, need: int) -> memoryview:
        stop = min(len(self.data), pos + max(need, STRING_WINDOW))
        return memoryview(np.ascontiguousarray(self.data[pos:stop])).cast("B")

    # -- tensors --------------------------------------------------------------------------------

    def _build_tensor_info(self, offs: int, count: int):
        self._bounded(count, MIN_TENSOR_INFO_BYTES, offs, "the header's tensor count", MAX_TENSORS)
        return super()._build_tensor_info(offs, count)

    def _get_tensor_info_field(self, orig_offs: int):
        name_len, _ = self._get_str(orig_offs)
        n_dims = int(self._get(orig_offs + 8 + int(name_len[0]), np.uint32)[0])
        if n_dims > MAX_DIMS:
            name = bytes(self.data[orig_offs + 8: orig_offs + 8 + int(name_len[0])]).decode(errors="replace")
            raise CoreError(f"{self._where()}: tensor {name!r} has {n_dims:,} dimensions (GGUF allows {MAX_DIMS})")
        return super()._get_tensor_info_field(orig_offs)

    def _build_tensors(self, start_offs: int, fields: list) -> None:
        self._check_tensor_ranges(start_offs, fields)
        super()._build_tensors(start_offs, fields)

    def _check_tensor_ranges(self, start_offs: int, fields: list) -> None:
        """Each tensor's bytes inside the file and shared with no other tensor (the type is known)."""
        ranges = []
        for f in fields:  # parts: name length, name, n_dims, dims, type, offset
            name = bytes(f.parts[1]).decode(errors="replace")
            dims = [int(d) for d in f.parts[3]]
            block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(int(f.parts[4][0]))]
            n = 1
            for d in dims:
                n *= d
            if n == 0 or dims[0] % block:
                raise CoreError(f"{self._where()}: tensor {name!r} has shape {dims}, not whole blocks of {block}")
            start = start_offs + int(f.parts[5][0])
            nbytes = n // block * type_size
            if start + nbytes > len(self.data):
                raise CoreError(f"{self._where()}: truncated GGUF file (tensor {name!r} needs bytes {start:,}-"
                                f"{start + nbytes:,}, the file has {len(self.data):,})")
            ranges.append((start, start + nbytes, name))
        ranges.sort()
        for (a0, a1, a), (b0, _, b) in zip(ranges, ranges[1:]):
            if b0 < a1:
                raise CoreError(f"{self._where()}: tensors {a!r} and {b!r} overlap (bytes {b0:,}-{a1:,}); tensor "
                                "data must not overlap")
