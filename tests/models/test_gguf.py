"""The GGUF reader (models/gguf.py) against the gguf package's own reader and writer."""

import numpy as np
import pytest

import gguf
import models
from models.gguf import WeightsError, open_reader


def _same_as_gguf_reader(path):
  ours, ref = open_reader(path), gguf.GGUFReader(path)
  ref_fields = {k: f.contents() for k, f in ref.fields.items() if not k.startswith("GGUF.")}
  assert ours.fields.keys() == ref_fields.keys()
  for k, v in ref_fields.items():
    assert ours.fields[k] == v and type(ours.fields[k]) is type(v), k
  assert [t.name for t in ours.tensors] == [t.name for t in ref.tensors]
  for a, b in zip(ours.tensors, ref.tensors):
    assert a.tensor_type == b.tensor_type and a.shape.tolist() == b.shape.tolist(), a.name
    assert a.data.dtype == b.data.dtype and a.data.shape == b.data.shape, a.name
    np.testing.assert_array_equal(np.asarray(a.data), np.asarray(b.data), err_msg=a.name)
  return ours


def _write(path, endianess=gguf.GGUFEndian.LITTLE, alignment=None):
  w = gguf.GGUFWriter(str(path), "llama", endianess=endianess)
  if alignment:
    w.add_custom_alignment(alignment)
  w.add_uint8("t.u8", 200)
  w.add_int8("t.i8", -100)
  w.add_uint16("t.u16", 60000)
  w.add_int16("t.i16", -30000)
  w.add_uint32("t.u32", 4_000_000_000)
  w.add_int32("t.i32", -2_000_000_000)
  w.add_uint64("t.u64", 2 ** 60)
  w.add_int64("t.i64", -2 ** 60)
  w.add_float32("t.f32", 0.1)
  w.add_float64("t.f64", 0.1)
  w.add_bool("t.bool", True)
  w.add_string("t.str", "héllo <think>")
  w.add_array("t.ints", [3, 1, 4, 1, 5])
  w.add_array("t.floats", [0.5, -2.25])
  w.add_array("t.strs", ["a", "", "Ġthé", "</think>"])
  w.add_array("t.empty", [])
  rng = np.random.default_rng(0)
  w.add_tensor("f32", rng.normal(size=(3, 5)).astype(np.float32))
  w.add_tensor("f16", rng.normal(size=(2, 7)).astype(np.float16))
  w.add_tensor("i32", np.arange(6, dtype=np.int32).reshape(2, 3))
  x = rng.normal(size=(4, 64)).astype(np.float32)
  for q in (gguf.GGMLQuantizationType.Q8_0, gguf.GGMLQuantizationType.Q4_1):
    w.add_tensor(q.name, gguf.quants.quantize(x, q), raw_dtype=q)
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  return x


@pytest.mark.parametrize("endianess,alignment", [(gguf.GGUFEndian.LITTLE, None),
                                                 (gguf.GGUFEndian.LITTLE, 64),
                                                 (gguf.GGUFEndian.BIG, None)])
def test_every_value_type_and_tensor_type_as_gguf_reads_them(tmp_path, endianess, alignment):
  p = tmp_path / "t.gguf"
  x = _write(p, endianess, alignment)
  ours = _same_as_gguf_reader(str(p))
  assert ours.alignment == (alignment or 32)
  assert ours.fields["t.strs"] == ["a", "", "Ġthé", "</think>"]
  assert ours.fields["t.u64"] == 2 ** 60 and ours.fields["t.bool"] is True
  if endianess == gguf.GGUFEndian.LITTLE:  # the gguf package dequantizes little-endian blocks only
    q = {t.name: t for t in ours.tensors}["Q8_0"]
    w = gguf.quants.dequantize(q.data, q.tensor_type).reshape(x.shape)
    np.testing.assert_allclose(w, x, atol=0.05)


def test_smollm2_as_gguf_reads_it():
  ours = _same_as_gguf_reader(models.smollm2_path())
  assert len(ours.fields["tokenizer.ggml.tokens"]) == 49152


@pytest.mark.parametrize("cut", [6, 20, 200, 500, -10])  # header, fields, tensors, data
def test_truncated_anywhere_is_a_damaged_file(tmp_path, cut):
  p = tmp_path / "t.gguf"
  _write(p)
  data = p.read_bytes()
  bad = tmp_path / "cut.gguf"
  bad.write_bytes(data[:cut])
  with pytest.raises(WeightsError, match=r"cut.gguf is a damaged GGUF file"):
    open_reader(str(bad))


def test_bad_version_and_alignment(tmp_path):
  p = tmp_path / "t.gguf"
  _write(p)
  data = bytearray(p.read_bytes())
  data[4:8] = (7).to_bytes(4, "little")
  (tmp_path / "v.gguf").write_bytes(bytes(data))
  with pytest.raises(WeightsError, match="damaged GGUF.*version 7"):
    open_reader(str(tmp_path / "v.gguf"))
  a = tmp_path / "a.gguf"
  _write(a, alignment=64)
  field = b"general.alignment" + (4).to_bytes(4, "little")  # key, then value type uint32
  data = a.read_bytes()
  assert data.count(field + (64).to_bytes(4, "little")) == 1
  a.write_bytes(data.replace(field + (64).to_bytes(4, "little"),
                             field + (48).to_bytes(4, "little")))
  with pytest.raises(WeightsError, match="alignment 48 is not a power of two"):
    open_reader(str(a))
