"""Greedy generation through the KV cache (a jitted prefill and a scanned decode)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from models import backend


@backend.jit(static_argnames=("graphdef", "steps"))
def _greedy(graphdef, state, prompt, steps):
  model = nnx.merge(graphdef, state)
  b, p = prompt.shape
  cache = model.init_cache(b, p + steps)
  logits, cache = model.decode(prompt, cache)
  first = jnp.argmax(logits[:, -1], axis=-1).astype(jnp.int32)

  def step(carry, _):
    tok, cache = carry
    logits, cache = model.decode(tok[:, None], cache)
    nxt = jnp.argmax(logits[:, -1], axis=-1).astype(jnp.int32)
    return (nxt, cache), tok

  (_, _), toks = jax.lax.scan(step, (first, cache), None, length=steps)
  return toks.T


def greedy_generate(model, prompt_ids, steps: int):
  """prompt_ids: [B, P] (or a list of ids) -> the next `steps` greedy token ids, [B, steps]."""
  prompt = jnp.asarray(prompt_ids, jnp.int32)
  if prompt.ndim == 1:
    prompt = prompt[None]
  graphdef, state = nnx.split(model)
  return _greedy(graphdef, state, prompt, steps)
