"""The accelerator path (bf16 compute, cuDNN flash attention, fused LM head + loss) against the
portable XLA path. Needs a GPU: skipped on CPU. Run there with JAX_PLATFORMS=cuda."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import models
from rlp import policy
from rlp import sampler as sampler_lib
from rlp import trainer

pytestmark = pytest.mark.skipif(jax.devices()[0].platform != "gpu",
                                reason="needs a CUDA GPU (cuDNN attention, bf16 matmul units)")

CFG = models.ModelConfig(vocab_size=1024, d_model=256, n_layers=2, n_heads=4, n_kv_heads=2,
                         head_dim=64, d_ff=512, dtype="bfloat16")


def _rel(a, b):
  a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
  return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))


def test_cudnn_attention_matches_xla_forward_and_gradient():
  k = jax.random.split(jax.random.key(0), 3)
  q = jax.random.normal(k[0], (2, 256, 4, 64), jnp.bfloat16)
  kk = jax.random.normal(k[1], (2, 256, 2, 64), jnp.bfloat16)
  v = jax.random.normal(k[2], (2, 256, 2, 64), jnp.bfloat16)
  mask = jnp.tril(jnp.ones((256, 256), bool))[None]
  from models import layers
  ref = lambda q, k, v: layers.attention(q, k, v, mask).astype(jnp.float32).sum()
  fast = lambda q, k, v: layers.cudnn_causal_attention(q, k, v).astype(jnp.float32).sum()
  assert _rel(layers.cudnn_causal_attention(q, kk, v), layers.attention(q, kk, v, mask)) < 2e-2
  for ga, gb in zip(jax.grad(fast, (0, 1, 2))(q, kk, v), jax.grad(ref, (0, 1, 2))(q, kk, v)):
    assert _rel(ga, gb) < 3e-2


def test_bf16_cpt_loss_cudnn_fused_equals_xla_unfused():
  """Loss and every parameter gradient of the CPT loss: cuDNN attention + fused head/loss vs XLA
  attention + materialised logits, both in bf16; a step of the fast path reports that loss."""
  x = jax.random.randint(jax.random.key(1), (4, 257), 0, CFG.vocab_size)
  batch = {"inputs": x[:, :-1], "targets": x[:, 1:], "loss_mask": jnp.ones((4, 256))}
  out = {}
  for name, attention, chunk in (("fast", "cudnn", 64), ("ref", "xla", 0)):
    model = models.Transformer(CFG.replace(attention=attention), rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    cfg = trainer.StepConfig(objective="cpt", loss_chunk=chunk)

    def loss(p):
      m = nnx.merge(graphdef, p)
      return policy.next_token_loss(m, batch["inputs"], batch["targets"], batch["loss_mask"], cfg)
    out[name] = jax.device_get(jax.jit(jax.value_and_grad(loss))(params))
  (lf, gf), (lr, gr) = out["fast"], out["ref"]
  assert abs(float(lf) - float(lr)) < 1e-2 * abs(float(lr))
  errs = [_rel(a, b) for a, b in zip(jax.tree.leaves(gf), jax.tree.leaves(gr))]
  assert max(errs) < 5e-2, errs
  model = models.Transformer(CFG.replace(attention="cudnn"), rngs=nnx.Rngs(0))
  tx = trainer.make_optimizer(1e-3)
  step = trainer.make_step(nnx.graphdef(model), tx, trainer.StepConfig(objective="cpt", loss_chunk=64))
  _, m, _ = step(trainer.init_state(model, tx), batch)
  # the step's loss is the fast path's loss at the same (seed-0) parameters, and it is applied
  assert abs(float(m["loss"]) - float(lf)) < 1e-2 * abs(float(lf)) and float(m["skipped"]) == 0.0


def test_bf16_rlp_step_on_gpu_agrees_with_float32():
  """One RLP step in bf16 compute against the same step in float32: the no-thought baseline
  S_ema (no sampling involved) agrees to bf16 precision, the rollout's S_pred to a few percent,
  the update's gradient norm to 30%, and nothing is skipped."""
  tokens = jax.random.randint(jax.random.key(2), (4, 128), 2, CFG.vocab_size)
  batch = {"tokens": tokens, "lengths": jnp.full((4,), 128, jnp.int32),
           "cuts": jnp.full((4, 1), 100, jnp.int32)}
  # sampled with one key in both: near-ties may sample other tokens, hence the looser S_pred
  scfg = sampler_lib.SamplerConfig(group_size=4, max_thought_len=16, temperature=1.0,
                                   prompt_ids=(1,), close_ids=(0,))
  got = {}
  for dtype in ("bfloat16", "float32"):
    model = models.Transformer(CFG.replace(dtype=dtype), rngs=nnx.Rngs(0))
    tx = trainer.make_optimizer(1e-4)
    step = trainer.make_step(nnx.graphdef(model), tx, trainer.StepConfig(sampler=scfg))
    state, m, ro = step(trainer.init_state(model, tx), batch)
    got[dtype] = jax.device_get(m)
    assert int(state.skips) == 0 and ro.tokens.shape[-1] >= 16
  bf, f32 = got["bfloat16"], got["float32"]
  assert abs(float(bf["rlp/s_ema_mean"]) - float(f32["rlp/s_ema_mean"])) < 2e-2 * abs(
      float(f32["rlp/s_ema_mean"]))
  assert abs(float(bf["rlp/s_pred_mean"]) - float(f32["rlp/s_pred_mean"])) < 5e-2 * abs(
      float(f32["rlp/s_pred_mean"]))
  assert float(f32["grad_norm"]) > 0
  assert abs(float(bf["grad_norm"]) - float(f32["grad_norm"])) < 0.3 * float(f32["grad_norm"])
