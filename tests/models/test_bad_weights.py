"""Bad weights files and configs give errors that name the problem."""

import json

import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file, save_file

import models

CFG = models.ModelConfig(vocab_size=50, d_model=16, n_layers=2, n_heads=2, n_kv_heads=1,
                         head_dim=8, d_ff=24, architecture="llama")


@pytest.fixture
def hf_dir(tmp_path):
  models.save_hf(models.Transformer(CFG, rngs=nnx.Rngs(0)), str(tmp_path))
  return tmp_path


def test_unknown_architecture(hf_dir):
  cfg = json.loads((hf_dir / "config.json").read_text())
  cfg["architectures"] = ["GPTNeoXForCausalLM"]
  (hf_dir / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(models.WeightsError, match="unknown architecture.*GPTNeoX"):
    models.load_hf(str(hf_dir))


def test_missing_tensor(hf_dir):
  w = load_file(str(hf_dir / "model.safetensors"))
  del w["model.layers.1.mlp.up_proj.weight"]
  save_file(w, str(hf_dir / "model.safetensors"))
  with pytest.raises(models.WeightsError, match="missing tensors.*layers.1.mlp.up_proj"):
    models.load_hf(str(hf_dir))


def test_shape_mismatch(hf_dir):
  cfg = json.loads((hf_dir / "config.json").read_text())
  cfg["intermediate_size"] = 32
  (hf_dir / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(models.WeightsError, match="shape mismatches.*gate_proj"):
    models.load_hf(str(hf_dir))


def test_not_a_safetensors_file(hf_dir):
  (hf_dir / "model.safetensors").write_bytes(b"PK\x03\x04 this is a zip, not safetensors")
  with pytest.raises(models.WeightsError, match="not a safetensors file"):
    models.load_hf(str(hf_dir))


def test_pickles_are_refused(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps(models.weights.config_to_hf(CFG)))
  (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
  with pytest.raises(models.WeightsError, match="pickled.*never loaded"):
    models.load_hf(str(tmp_path))


def test_not_a_gguf_file(tmp_path):
  p = tmp_path / "model.gguf"
  p.write_bytes(b"\x00" * 64)
  with pytest.raises(models.WeightsError, match="not a GGUF file"):
    models.load_gguf(str(p))


def test_truncated_gguf(tmp_path):
  src = models.smollm2_path()
  with open(src, "rb") as f:
    head = f.read(4096)
  p = tmp_path / "cut.gguf"
  p.write_bytes(head)
  with pytest.raises(models.WeightsError, match="damaged GGUF"):
    models.load_gguf(str(p))


def test_bad_model_config():
  with pytest.raises(ValueError, match="n_heads .* multiple of n_kv_heads"):
    models.ModelConfig(n_heads=4, n_kv_heads=3)
  with pytest.raises(ValueError, match="remat must be one of"):
    models.ModelConfig(remat="sometimes")


def test_roundtrip_preserves_params(hf_dir):
  loaded = models.load_hf(str(hf_dir))
  a = models.weights.pure_params(loaded)
  w = load_file(str(hf_dir / "model.safetensors"))
  np.testing.assert_array_equal(np.asarray(a["embed"]), w["model.embed_tokens.weight"])
  assert loaded.config == CFG.replace(max_seq_len=CFG.max_seq_len)
