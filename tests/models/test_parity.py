"""Logits parity with transformers (torch CPU) for Llama, Qwen2, Qwen3, through save_hf/load_hf."""

import numpy as np
import pytest
import torch
import transformers
from flax import nnx

import models

CONFIGS = {
    "llama": models.ModelConfig(vocab_size=97, d_model=48, n_layers=2, n_heads=4, n_kv_heads=2,
                                head_dim=12, d_ff=80, rope_theta=5e5, tie_embeddings=False,
                                architecture="llama"),
    "llama3_scaled": models.ModelConfig(vocab_size=97, d_model=48, n_layers=2, n_heads=4,
                                        n_kv_heads=1, head_dim=12, d_ff=80, rope_theta=5e5,
                                        rope_scaling=(8.0, 1.0, 4.0, 16), max_seq_len=128,
                                        architecture="llama"),
    "qwen2": models.ModelConfig(vocab_size=97, d_model=48, n_layers=2, n_heads=6, n_kv_heads=2,
                                head_dim=8, d_ff=80, rope_theta=1e6, norm_eps=1e-6,
                                attn_bias=True, architecture="qwen2"),
    "qwen3": models.ModelConfig(vocab_size=97, d_model=48, n_layers=3, n_heads=4, n_kv_heads=2,
                                head_dim=16, d_ff=80, rope_theta=1e6, norm_eps=1e-6, qk_norm=True,
                                tie_embeddings=False, architecture="qwen3"),
}


def _randomize(model, seed):
  """Non-trivial norms and biases, so parity covers every parameter."""
  state = nnx.state(model, nnx.Param)
  leaves, treedef = __import__("jax").tree.flatten(state)
  rng = np.random.default_rng(seed)
  new = [l + rng.normal(0, 0.1, l.shape).astype(np.float32) for l in leaves]
  nnx.update(model, __import__("jax").tree.unflatten(treedef, new))


def _tokens(cfg, seed=0, length=33):
  return np.random.default_rng(seed).integers(0, cfg.vocab_size, (2, length)).astype(np.int32)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_ours_to_transformers(name, tmp_path):
  cfg = CONFIGS[name]
  model = models.Transformer(cfg, rngs=nnx.Rngs(1))
  _randomize(model, 1)
  models.save_hf(model, str(tmp_path))
  ref = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path), dtype=torch.float32)
  ref.eval()
  toks = _tokens(cfg)
  with torch.no_grad():
    want = ref(torch.tensor(toks, dtype=torch.long)).logits.numpy()
  got = np.asarray(model(toks))
  assert np.abs(got - want).max() <= 1e-4


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_transformers_to_ours(name, tmp_path):
  cfg = CONFIGS[name]
  hf_cfg = transformers.AutoConfig.for_model(**models.weights.config_to_hf(cfg))
  torch.manual_seed(0)
  ref = transformers.AutoModelForCausalLM.from_config(hf_cfg, dtype=torch.float32)
  with torch.no_grad():
    for p in ref.parameters():
      p.add_(torch.randn_like(p) * 0.05)
  ref.save_pretrained(str(tmp_path), safe_serialization=True)
  ref.eval()
  ours = models.load_hf(str(tmp_path))
  assert ours.config.architecture == cfg.architecture
  toks = _tokens(cfg, seed=3)
  with torch.no_grad():
    want = ref(torch.tensor(toks, dtype=torch.long)).logits.numpy()
  assert np.abs(np.asarray(ours(toks)) - want).max() <= 1e-4


def test_save_hf_refuses_to_overwrite(tmp_path):
  model = models.Transformer(CONFIGS["qwen2"], rngs=nnx.Rngs(0))
  models.save_hf(model, str(tmp_path))
  with pytest.raises(models.WeightsError, match="exists"):
    models.save_hf(model, str(tmp_path))
  models.save_hf(model, str(tmp_path), overwrite=True)
