"""Token sampling from logits: temperature, top-k, top-p and banned tokens, returning the sampled
token with its log-probability under the sampling policy. Used by the RLP rollout (rlp/sampler.py)
and by text generation (models/generate.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def last_axis_argmax(x):
  """jnp.argmax(x, -1) (the first index of the maximum) as two plain reductions. XLA:CPU runs the
  (value, index) reduction behind jnp.argmax as a scalar loop, most of a decode step's sampling
  time over a large vocabulary (docs/performance.md)."""
  m = x.max(-1, keepdims=True)
  iota = jax.lax.broadcasted_iota(jnp.int32, x.shape, x.ndim - 1)
  first = jnp.min(jnp.where(x == m, iota, x.shape[-1]), axis=-1)
  return jnp.minimum(first, x.shape[-1] - 1)  # a NaN row (no index equals its max): the last


def policy_logits(logits, temperature):
  return logits if temperature == 0 else logits / temperature


def sample_logits(key, logits, temperature, top_k=0, top_p=1.0, ban=None):
  """Samples from [..., V] logits; temperature 0 is greedy. Returns (token, policy log-prob).

  `ban` ([..., V] bool) removes tokens from sampling only: the returned log-prob is that of the
  unrestricted policy, as the trainer recomputes it (so the importance ratio starts at 1).
  """
  logp = jax.nn.log_softmax(policy_logits(logits, temperature).astype(jnp.float32), axis=-1)
  masked = logp if ban is None else jnp.where(ban, -jnp.inf, logp)
  if temperature == 0:
    tok = last_axis_argmax(masked)
    return tok.astype(jnp.int32), jnp.take_along_axis(logp, tok[..., None], -1)[..., 0]
  if top_k:
    kth = jax.lax.top_k(masked, top_k)[0][..., -1:]
    masked = jnp.where(masked < kth, -jnp.inf, masked)
  if top_p < 1.0:
    # nucleus over what the ban and top-k left, renormalised (the standard order of filters)
    masked = jax.nn.log_softmax(masked, axis=-1)
    srt = jnp.sort(masked, axis=-1)[..., ::-1]
    cum = jnp.cumsum(jnp.exp(srt), axis=-1)
    # keep the smallest prefix whose mass reaches top_p (always at least the top token)
    cutoff_idx = jnp.sum(cum - jnp.exp(srt) < top_p, axis=-1, keepdims=True) - 1
    cutoff = jnp.take_along_axis(srt, cutoff_idx, -1)
    masked = jnp.where(masked < cutoff, -jnp.inf, masked)
  # jax.random.categorical(key, masked, axis=-1) exactly (the same Gumbel noise, so the same
  # tokens), with the faster argmax
  noise = jax.random.gumbel(key, masked.shape, jnp.float32)
  tok = last_axis_argmax(masked + noise).astype(jnp.int32)
  return tok, jnp.take_along_axis(logp, tok[..., None], -1)[..., 0]
