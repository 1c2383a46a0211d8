"""models.backend: the per-backend compile options reach the programs, and on CPU the rollout's
decode loop writes its thought caches in place instead of copying them every step."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import models
from models import backend
from rlp import sampler

CFG = models.ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=1,
                         head_dim=8, d_ff=48)
SCFG = sampler.SamplerConfig(group_size=2, max_thought_len=6, min_thought_len=6, prompt_ids=(1,),
                             close_ids=(63,), temperature=1.0, unroll_layers=True)


def _cache_copies(hlo: str, cache_shape: str) -> int:
  """Top-level copies of an array shaped like one layer's thought cache."""
  return len(re.findall(rf"%copy[\w.\-]* = f32\[{cache_shape}\]\S* copy\(", hlo))


@pytest.fixture(scope="module")
def rollout_inputs():
  model = models.Transformer(CFG, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model)
  docs = jnp.asarray(np.random.default_rng(0).integers(2, 60, (2, 16)), jnp.int32)
  cuts = jnp.asarray([[5, 9], [7, 12]], jnp.int32)
  return graphdef, params, docs, cuts


def test_compiler_options_per_platform():
  assert backend.compiler_options("cpu") == {"xla_cpu_copy_insertion_use_region_analysis": True}
  assert backend.compiler_options("gpu") is None and backend.compiler_options("tpu") is None
  opts = backend.compiler_options("cpu")
  opts["x"] = 1  # a copy: the module's options stay as they were
  assert "x" not in backend.compiler_options("cpu")


def test_jit_wrapper_is_jax_jit_with_the_options():
  calls = []

  @backend.jit(static_argnames=("n",))
  def f(x, n):
    calls.append(n)
    return x * n

  assert f.__name__ == "f"
  assert float(f(jnp.float32(2.0), n=3)) == 6.0 and float(f(jnp.float32(5.0), n=3)) == 15.0
  assert calls == [3]  # traced once: one jitted function behind the wrapper
  assert f._cache_size() == 1  # jax.jit's own attributes pass through
  explicit = backend.jit(lambda x: x + 1, compiler_options={})
  assert float(explicit(jnp.float32(1.0))) == 2.0
  assert float(backend.jit(lambda x: x * 2, backend="cpu")(jnp.float32(2.0))) == 4.0


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the option is XLA:CPU's")
def test_cpu_rollout_writes_thought_caches_in_place(rollout_inputs):
  graphdef, params, docs, cuts = rollout_inputs
  # one layer's thought caches (the decode loop's layout, models.transformer.thought_cache):
  # values [B, N, K, prompt + buffer, D], keys [B, N, K, D, prompt + buffer]
  b, n, t = 2, 2 * SCFG.group_size, 1 + SCFG.buffer_len
  values = f"{b},{n},{CFG.n_kv_heads},{t},{CFG.head_dim}"
  keys = f"{b},{n},{CFG.n_kv_heads},{CFG.head_dim},{t}"
  args = (graphdef, params, docs, cuts, jax.random.key(0), SCFG)
  ours = sampler.rollout_jit.lower(*args).compile().as_text()
  plain = jax.jit(sampler.rollout_jit.__wrapped__, static_argnames=("graphdef", "cfg"))
  default = plain.lower(*args).compile().as_text()
  for shape in (values, keys):
    assert _cache_copies(default, shape) > 0, "XLA:CPU no longer copies the caches by default"
    assert _cache_copies(ours, shape) == 0
  a = sampler.rollout_jit(*args)
  b = plain(*args)
  np.testing.assert_array_equal(np.asarray(a.tokens), np.asarray(b.tokens))
  np.testing.assert_allclose(np.asarray(a.logp), np.asarray(b.logp), atol=1e-6)
