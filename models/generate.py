"""Text generation through the KV cache: one jitted prefill and a scanned decode, for left-padded
prompts, greedy (temperature 0) or sampled. The one generation loop: greedy_generate (tests,
notebooks), rlp-eval's answers and the lm-evaluation-harness adapter all run it."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from models import backend
from models.sampling import sample_logits


@backend.jit(static_argnames=("graphdef", "steps", "temperature", "top_p"))
def decode_tokens(graphdef, params, prompt, pad_len, key, steps: int, temperature: float = 0.0,
                  top_p: float = 1.0):
  """Left-padded prompts [B, P] (row b starts with pad_len[b] pad tokens, which nothing attends
  to) -> the next `steps` tokens [B, steps], each sampled at `temperature` / `top_p` (0: greedy)
  from the one before, step i with fold_in(key, i)."""
  model = nnx.merge(graphdef, params)
  b, p = prompt.shape
  idx = jnp.arange(p)[None]
  seg = (idx >= pad_len[:, None]).astype(jnp.int32)
  pos = jnp.maximum(idx - pad_len[:, None], 0)
  cache = model.init_cache(b, p + steps)
  logits, cache = model.decode(prompt, cache, positions=pos, segment_ids=seg)

  def step(carry, i):
    last, cache = carry
    tok, _ = sample_logits(jax.random.fold_in(key, i), last, temperature, 0, top_p)
    logits, cache = model.decode(tok[:, None], cache, positions=(p + i - pad_len)[:, None],
                                 segment_ids=jnp.ones((b, 1), jnp.int32))
    return (logits[:, -1], cache), tok

  _, toks = jax.lax.scan(step, (logits[:, -1], cache), jnp.arange(steps))
  return toks.T


def left_pad(rows: list[list[int]], pad_id: int = 0,
             width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Token-id rows of different lengths -> ([B, P] left-padded ids, [B] pad counts); P is the
  longest row, or `width` (>= it: a fixed shape, so fewer programs compile)."""
  width = width or max(len(r) for r in rows)
  ids = np.full((len(rows), width), pad_id, np.int32)
  pad = np.zeros((len(rows),), np.int32)
  for i, r in enumerate(rows):
    ids[i, width - len(r):] = r
    pad[i] = width - len(r)
  return ids, pad


def generate_ids(model, prompts: list[list[int]], steps: int, temperature: float = 0.0,
                 top_p: float = 1.0, seed: int = 0) -> list[list[int]]:
  """Token-id prompts of any lengths -> the next `steps` token ids of each (0: greedy)."""
  graphdef, params = nnx.split(model)
  ids, pad = left_pad(prompts)
  out = decode_tokens(graphdef, params, jnp.asarray(ids), jnp.asarray(pad), jax.random.key(seed),
                      steps, float(temperature), float(top_p))
  return np.asarray(out).tolist()


def greedy_generate(model, prompt_ids, steps: int):
  """prompt_ids: [B, P] (or a list of ids) -> the next `steps` greedy token ids, [B, steps]."""
  prompt = jnp.asarray(prompt_ids, jnp.int32)
  if prompt.ndim == 1:
    prompt = prompt[None]
  graphdef, params = nnx.split(model)
  return decode_tokens(graphdef, params, prompt, jnp.zeros((prompt.shape[0],), jnp.int32),
                       jax.random.key(0), steps)
