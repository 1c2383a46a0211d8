"""Evaluation: held-out likelihood without a thought (more in rlp-eval)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rlp import objective as O


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _nll_sum(graphdef, params, tokens, lengths):
  logits = nnx.merge(graphdef, params)(tokens)[:, :-1]
  mask = jnp.arange(tokens.shape[1] - 1)[None] < (lengths[:, None] - 1)
  nll = -O.token_logp(logits, tokens[:, 1:])
  return (nll * mask).sum(), mask.sum()


def heldout_nll(graphdef, params, docs, seq_len: int, batch_size: int = 4, pad_id: int = 0) -> dict:
  """Per-token NLL and perplexity of documents (list of int arrays), truncated to seq_len."""
  total, count = 0.0, 0
  for i in range(0, len(docs), batch_size):
    chunk = [d[:seq_len] for d in docs[i:i + batch_size]]
    while len(chunk) < batch_size:  # keep one compiled shape
      chunk.append(np.asarray([pad_id], np.int32))
    toks = np.full((batch_size, seq_len), pad_id, np.int32)
    lens = np.zeros((batch_size,), np.int32)
    for j, d in enumerate(chunk):
      toks[j, :len(d)] = d
      lens[j] = len(d)
    s, n = _nll_sum(graphdef, params, jnp.asarray(toks), jnp.asarray(lens))
    total += float(s)
    count += int(n)
  nll = total / max(count, 1)
  return {"eval/nll": nll, "eval/ppl": float(np.exp(min(nll, 50.0))), "eval/tokens": count}
