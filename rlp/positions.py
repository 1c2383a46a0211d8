"""Where thoughts go: the target positions t of a document (x_t is predicted after the thought).

One implementation for the trainer and the evaluator:
  uniform   seeded, uniformly among t in [min_prefix, length - 1] (the paper)
  marker    seeded, uniformly among the positions right after a marker token sequence
  entropy   the k positions where a scoring model's no-thought distribution has the most entropy
  low_logp  the k positions where a scoring model finds x_t least likely without a thought

The scored selections depend on the model that scores: the trainer scores with the EMA model,
the evaluator with a model named once and shared by every model it compares (a selection made by
the evaluated model itself, followed by subtracting that model's own no-thought log-prob, credits
any flatter prediction after a thought: the lowest log-probs regress towards the mean).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


SCORED = ("entropy", "low_logp")


def token_scores(model, tokens_BxS, exclude: int | None = None):
  """log p(x_t | x_<t) and the entropy of the no-thought distribution at every t ([B, S]; index t
  scores x_t, t = 0 scores nothing and holds 0). exclude: a dedicated <think> id left out of the
  distribution (objective.token_logp)."""
  logits = model(tokens_BxS)[:, :-1].astype(jnp.float32)
  if exclude is not None:
    logits = logits.at[..., exclude].set(-jnp.inf)
  logp_all = jax.nn.log_softmax(logits, -1)
  lp = jnp.take_along_axis(logp_all, tokens_BxS[:, 1:, None], -1)[..., 0]
  ent = -jnp.where(jnp.isfinite(logp_all), jnp.exp(logp_all) * logp_all, 0.0).sum(-1)
  pad = jnp.zeros((tokens_BxS.shape[0], 1))
  return jnp.concatenate([pad, lp], 1), jnp.concatenate([pad, ent], 1)


def top_positions(score_BxS, lengths_B, k: int, min_prefix: int):
  """The k valid positions t in [min_prefix, length) of highest score per document, in order of
  score. A document with fewer than k valid positions repeats its best one (never an invalid 0
  or a padded t)."""
  t = jnp.arange(score_BxS.shape[1])[None]
  ok = (t >= min_prefix) & (t < lengths_B[:, None])
  vals, idx = jax.lax.top_k(jnp.where(ok, score_BxS, -jnp.inf), k)
  return jnp.where(jnp.isfinite(vals), idx, idx[:, :1]).astype(jnp.int32)


def scored_positions(model, tokens_BxS, lengths_B, selection: str, k: int, min_prefix: int,
                     exclude: int | None = None, n: int = 1):
  """(cuts [B, K], log p(x_t | x_<t) there: `at_targets`) for selection entropy / low_logp under
  model."""
  if selection not in SCORED:
    raise ValueError(f"scored selection must be one of {SCORED} (got {selection!r})")
  lp, ent = token_scores(model, tokens_BxS, exclude)
  cuts = top_positions(ent if selection == "entropy" else -lp, lengths_B, k, min_prefix)
  return cuts, at_targets(lp, cuts, n)


def following(cuts_BxK, n: int, seq_len: int):
  """The positions t .. t + n - 1 of each target t, [B, K, n], clipped into the sequence (the ones
  past a document's end are the caller's to mask)."""
  return jnp.minimum(cuts_BxK[..., None] + jnp.arange(n), seq_len - 1)


def at_targets(scores_BxS, cuts_BxK, n: int = 1):
  """Per-position scores at each target t ([B, K]), or with n > 1 at t .. t + n - 1 ([B, K, n]:
  a reward over several tokens, `following`)."""
  if n == 1:
    return jnp.take_along_axis(scores_BxS, cuts_BxK, 1)
  b, k = cuts_BxK.shape
  idx = following(cuts_BxK, n, scores_BxS.shape[1]).reshape(b, k * n)
  return jnp.take_along_axis(scores_BxS, idx, 1).reshape(b, k, n)
