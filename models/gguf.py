"""Reading GGUF files: one opener and one field reader, for the weights and the tokenizer.

The header is parsed here rather than with `gguf.GGUFReader`, which builds a numpy view per
string of the tokenizer's vocabulary and merges (about 3 s for SmolLM2's 49k tokens, paid by every
process that loads the model and again for its tokenizer); this parse takes a few tens of ms. The
tensors are the same memory-mapped views GGUFReader gives (quantized types as uint8 rows of
blocks, for `gguf.quants.dequantize`).
Format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md
"""

from __future__ import annotations

import os
import struct
from typing import Any, NamedTuple

import numpy as np


class WeightsError(ValueError):
  """A weights file or directory that cannot be used, with what is wrong and what to do."""


# GGUF metadata value types -> (struct code, numpy dtype); 8 is a string, 9 an array
_SCALAR = {0: ("B", np.uint8), 1: ("b", np.int8), 2: ("H", np.uint16), 3: ("h", np.int16),
           4: ("I", np.uint32), 5: ("i", np.int32), 6: ("f", np.float32), 7: ("?", np.bool_),
           10: ("Q", np.uint64), 11: ("q", np.int64), 12: ("d", np.float64)}
_STRING, _ARRAY = 8, 9
# tensor types stored as plain numbers (the rest are quantized blocks)
_PLAIN = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I8": np.int8, "I16": np.int16,
          "I32": np.int32, "I64": np.int64}
_VERSIONS = (2, 3)
_DEFAULT_ALIGNMENT = 32


class Tensor(NamedTuple):
  name: str
  tensor_type: Any  # gguf.GGMLQuantizationType
  shape: np.ndarray  # GGUF order: fastest-varying dimension first
  data: np.ndarray  # memory-mapped; numpy order (reversed shape), uint8 rows for quantized types


class GGUFFile:
  """A parsed GGUF file: `fields` (key -> decoded value: str, int, float, bool or list),
  `tensors` (list of Tensor over a read-only memory map), `version`, `alignment`."""

  def __init__(self, path: str):
    self.path = path
    self._map = np.memmap(path, mode="r")
    buf = self._map
    order = "<"
    (version,) = struct.unpack_from("<I", buf, 4)
    if version & 0xFFFF == 0:  # written on a big-endian machine
      order = ">"
      (version,) = struct.unpack_from(">I", buf, 4)
    if version not in _VERSIONS:
      raise ValueError(f"GGUF version {version}; this reader handles versions 2 and 3")
    self.version = version
    self._order = order
    n_tensors, n_kv = struct.unpack_from(order + "QQ", buf, 8)
    size = len(buf)
    if n_kv > size or n_tensors > size:
      raise ValueError(f"header counts out of range ({n_tensors} tensors, {n_kv} fields)")
    self._buf, self._pos = memoryview(buf), 24
    self.fields: dict[str, Any] = {}
    for _ in range(n_kv):
      key = self._string()
      (kind,) = self._unpack("I")
      self.fields[key] = self._value(kind)
    infos = []
    for _ in range(n_tensors):
      name = self._string()
      (n_dims,) = self._unpack("I")
      if n_dims > 8:
        raise ValueError(f"tensor {name!r} has {n_dims} dimensions")
      dims = np.array(self._unpack("Q" * n_dims), np.uint64)
      kind, offset = self._unpack("IQ")
      infos.append((name, dims, kind, offset))
    alignment = self.fields.get("general.alignment", _DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
      raise ValueError(f"general.alignment {alignment!r} is not a power of two")
    self.alignment = alignment
    start = -(-self._pos // alignment) * alignment
    self.tensors = [self._tensor(start, *info) for info in infos]
    names = [t.name for t in self.tensors]
    if len(set(names)) != len(names):
      raise ValueError("duplicate tensor names")
    del self._buf

  # ---------------------------------------------------------------- parsing
  def _unpack(self, codes: str):
    out = struct.unpack_from(self._order + codes, self._buf, self._pos)
    self._pos += struct.calcsize(self._order + codes)
    return out

  def _string(self) -> str:
    (n,) = self._unpack("Q")
    end = self._pos + n
    if end > len(self._buf):
      raise ValueError(f"a string of {n} bytes runs past the end of the file")
    s = str(self._buf[self._pos:end], "utf-8")
    self._pos = end
    return s

  def _value(self, kind: int):
    if kind in _SCALAR:
      return self._unpack(_SCALAR[kind][0])[0]
    if kind == _STRING:
      return self._string()
    if kind != _ARRAY:
      raise ValueError(f"unknown metadata value type {kind}")
    sub, n = self._unpack("IQ")
    if sub in _SCALAR:
      dtype = np.dtype(_SCALAR[sub][1]).newbyteorder(self._order)
      end = self._pos + n * dtype.itemsize
      if end > len(self._buf):
        raise ValueError(f"an array of {n} values runs past the end of the file")
      values = np.frombuffer(self._buf, dtype, count=n, offset=self._pos).tolist()
      self._pos = end
      return values
    if sub == _STRING:
      return self._strings(n)
    return [self._value(sub) for _ in range(n)]

  def _strings(self, n: int) -> list[str]:
    """n length-prefixed strings (a vocabulary, merges) in one loop over the mapped bytes."""
    buf, p, size = self._buf, self._pos, len(self._buf)
    if n > size:
      raise ValueError(f"an array of {n} strings runs past the end of the file")
    out, unpack = [], struct.Struct(self._order + "Q").unpack_from
    for _ in range(n):
      (length,) = unpack(buf, p)
      if p + 8 + length > size:
        raise ValueError(f"an array of {n} strings runs past the end of the file")
      out.append(str(buf[p + 8:p + 8 + length], "utf-8"))
      p += 8 + length
    self._pos = p
    return out

  def _tensor(self, start, name, dims, kind, offset) -> Tensor:
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
    from gguf.quants import quant_shape_to_byte_shape
    qtype = GGMLQuantizationType(kind)
    block, type_size = GGML_QUANT_SIZES[qtype]
    n_elems = int(np.prod(dims, dtype=np.uint64))
    np_dims = tuple(int(d) for d in reversed(dims.tolist()))
    plain = _PLAIN.get(qtype.name)
    if plain is not None:
      dtype = np.dtype(plain).newbyteorder(self._order)
    else:
      if np_dims and np_dims[-1] % block:
        raise ValueError(f"tensor {name!r}: rows of {np_dims[-1]} are not whole {qtype.name} "
                         f"blocks of {block}")
      dtype, np_dims = np.dtype(np.uint8), quant_shape_to_byte_shape(np_dims, qtype)
    n_bytes = n_elems * type_size // block
    begin = start + int(offset)
    if begin + n_bytes > len(self._map):
      raise ValueError(f"tensor {name!r} ends at byte {begin + n_bytes} of a "
                       f"{len(self._map)}-byte file (truncated?)")
    data = self._map[begin:begin + n_bytes].view(dtype).reshape(np_dims)
    return Tensor(name, qtype, dims, data)


def open_reader(path: str) -> GGUFFile:
  """The parsed GGUF file at `path` (memory-mapped: tensors are read when touched), or a
  WeightsError that says what is wrong with the file."""
  if not os.path.isfile(path):
    raise WeightsError(f"{path} does not exist")
  with open(path, "rb") as f:
    magic = f.read(4)
  if magic != b"GGUF":
    raise WeightsError(f"{path} is not a GGUF file (magic {magic!r}, expected b'GGUF')")
  try:
    return GGUFFile(path)
  except (ValueError, struct.error, UnicodeDecodeError, OverflowError, MemoryError) as e:
    raise WeightsError(f"{path} is a damaged GGUF file ({type(e).__name__}: {e}); "
                       "re-download or re-convert it") from e


def field(reader: GGUFFile, key: str, default=None):
  """The decoded contents of a metadata field, or `default` when the file has none."""
  return reader.fields.get(key, default)
