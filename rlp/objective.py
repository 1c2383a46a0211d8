"""RLP's objective as pure functions (RLP_SPEC.md, eq. 3-8): no model in here.

Shapes: thoughts are grouped with the group axis G last in rewards/advantages ([..., G]) and the
token axis T last in per-token arrays ([..., G, T]).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def information_gain(s_pred, s_ema):
  """r(c) = log p_theta(x_t | x_<t, c) - log p_phi(x_t | x_<t); a constant (no gradient)."""
  return jax.lax.stop_gradient(s_pred - s_ema)


def group_advantages(rewards, scale: str = "none", eps: float = 1e-6):
  """A_i = G/(G-1) (r_i - mean_j r_j) over the last axis (= leave-one-out baseline).

  scale="std" gives GRPO's (r - mean) / (std + eps) instead.
  """
  g = rewards.shape[-1]
  if g < 2:
    raise ValueError(f"group_advantages needs a group of >= 2 thoughts (got {g})")
  r = jax.lax.stop_gradient(rewards)
  centred = r - r.mean(axis=-1, keepdims=True)
  if scale == "none":
    return centred * (g / (g - 1))
  if scale == "std":
    return centred / (r.std(axis=-1, keepdims=True) + eps)
  raise ValueError(f"advantage scale must be 'none' or 'std' (got {scale!r})")


def clipped_surrogate_loss(logp, old_logp, advantages, mask, eps_low: float = 0.2,
                           eps_high: float = 0.2, normalize: str = "sequence",
                           return_metrics: bool = False):
  """PPO-clip over thought tokens.

  logp, old_logp, mask: [..., T]; advantages: [...] (one per thought). "sequence" averages tokens
  within a thought then over thoughts (the paper: -(1/|c_i|) sum_u ...); "token" averages over all
  thought tokens of the batch. Thoughts without tokens are left out of the mean.
  """
  mask = mask.astype(jnp.float32)
  adv = jax.lax.stop_gradient(advantages)[..., None]
  old_logp = jax.lax.stop_gradient(old_logp)
  ratio = jnp.exp(jnp.where(mask > 0, logp - old_logp, 0.0))
  unclipped = ratio * adv
  clipped = jnp.clip(ratio, 1.0 - eps_low, 1.0 + eps_high) * adv
  per_token = -jnp.minimum(unclipped, clipped)
  n_tok = mask.sum(-1)
  if normalize == "sequence":
    has = (n_tok > 0).astype(jnp.float32)
    per_seq = (per_token * mask).sum(-1) / jnp.maximum(n_tok, 1.0)
    loss = (per_seq * has).sum() / jnp.maximum(has.sum(), 1.0)
  elif normalize == "token":
    loss = (per_token * mask).sum() / jnp.maximum(mask.sum(), 1.0)
  else:
    raise ValueError(f"normalize must be 'sequence' or 'token' (got {normalize!r})")
  if not return_metrics:
    return loss
  is_clipped = ((adv > 0) & (ratio > 1 + eps_high)) | ((adv < 0) & (ratio < 1 - eps_low))
  denom = jnp.maximum(mask.sum(), 1.0)
  metrics = {"clip_frac": (is_clipped * mask).sum() / denom,
             "ratio_mean": (ratio * mask).sum() / denom,
             "ratio_max": jnp.max(jnp.where(mask > 0, ratio, 0.0))}
  return loss, jax.tree.map(jax.lax.stop_gradient, metrics)


def kl_k3(logp, ref_logp, mask):
  """Mean k3 estimator exp(ref - pol) - (ref - pol) - 1 over masked tokens."""
  d = jnp.where(mask > 0, jax.lax.stop_gradient(ref_logp) - logp, 0.0)
  kl = jnp.exp(d) - d - 1.0
  return (kl * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def token_logp(logits, tokens):
  """log softmax(logits)[token] as logit - logsumexp: no [.., V] log-prob array is materialised
  (on SmolLM2's 49k vocabulary this cut the LM-head + loss backward by a third on CPU)."""
  logits = logits.astype(jnp.float32)
  picked = jnp.take_along_axis(logits, tokens[..., None], -1)[..., 0]
  return picked - jax.nn.logsumexp(logits, axis=-1)


def entropy(logits, mask):
  """Mean entropy of softmax(logits) over masked positions."""
  lp = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
  h = -(jnp.exp(lp) * lp).sum(-1)
  return (h * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def next_token_loss(logits, targets, mask):
  """Mean next-token cross-entropy over masked positions (CPT; the NTP mixing term)."""
  nll = -token_logp(logits, targets)
  mask = mask.astype(jnp.float32)
  return (nll * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def rpt_reward(pred_bytes, pred_len, cont_bytes, cont_boundary):
  """RPT's binary reward: the prediction's bytes are an exact prefix of the true continuation
  that ends at a token boundary.

  pred_bytes [..., Lp] (padded), pred_len [...]; cont_bytes [..., Lc] (padded);
  cont_boundary [..., Lc] bool, True at byte j when a continuation token ends after byte j.
  """
  lp, lc = pred_bytes.shape[-1], cont_bytes.shape[-1]
  n = min(lp, lc)
  j = jnp.arange(n)
  within = j < pred_len[..., None]
  same = jnp.where(within, pred_bytes[..., :n] == cont_bytes[..., :n], True).all(-1)
  end = jnp.clip(pred_len - 1, 0, lc - 1)
  at_boundary = jnp.take_along_axis(cont_boundary, end[..., None], -1)[..., 0]
  ok = same & at_boundary & (pred_len >= 1) & (pred_len <= lc)
  return ok.astype(jnp.float32)
