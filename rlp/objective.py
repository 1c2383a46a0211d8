"""RLP's objective as pure functions (the paper's eq. 3-8, docs/method.md): no model in here.

Shapes: thoughts are grouped with the group axis G last in rewards/advantages ([..., G]) and the
token axis T last in per-token arrays ([..., G, T]).
"""

from __future__ import annotations

import functools

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


def kl_estimate(logp, ref_logp, mask, estimator: str = "k3"):
  """Mean per-token KL(pi || ref) estimate over masked tokens from sampled tokens' log-probs
  (Schulman's estimators; d = log pi - log ref): k1 = d (unbiased, high variance), k2 = d^2 / 2
  (its gradient is that of the KL for samples from pi), k3 = exp(-d) - 1 + d (unbiased, >= 0)."""
  if estimator == "k3":
    return kl_k3(logp, ref_logp, mask)
  d = jnp.where(mask > 0, logp - jax.lax.stop_gradient(ref_logp), 0.0)
  if estimator == "k1":
    per = d
  elif estimator == "k2":
    per = 0.5 * d * d
  else:
    raise ValueError(f"kl estimator must be k1 | k2 | k3 (got {estimator!r})")
  return (per * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def kl_k3(logp, ref_logp, mask):
  """Mean k3 estimator exp(ref - pol) - (ref - pol) - 1 over masked tokens."""
  d = jnp.where(mask > 0, jax.lax.stop_gradient(ref_logp) - logp, 0.0)
  kl = jnp.exp(d) - d - 1.0
  return (kl * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def token_logp(logits, tokens, exclude: int | None = None):
  """log softmax(logits)[token] as logit - logsumexp: no [.., V] log-prob array is materialised
  (with a large vocabulary that array and its gradient dominate the head's backward).

  exclude: a token id removed from the distribution (renormalised without it): the no-thought
  baseline of a model whose vocabulary has a dedicated thought-opener token is
  log p(x_t | x_<t, no thought here), not a distribution that keeps mass for opening a thought."""
  logits = logits.astype(jnp.float32)
  if exclude is not None:
    logits = logits.at[..., exclude].set(-jnp.inf)
  picked = jnp.take_along_axis(logits, tokens[..., None], -1)[..., 0]
  return picked - jax.nn.logsumexp(logits, axis=-1)


def entropy(logits, mask):
  """Mean entropy of softmax(logits) over masked positions."""
  lp = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
  h = -(jnp.exp(lp) * lp).sum(-1)
  return (h * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def chunked_policy_logp(h_xTxD, head, tokens_xT, temperature: float, chunk: int):
  """Per-token policy log-probs and entropies of `tokens` under head(h) / temperature, with the
  head applied to `chunk` positions of the T axis at a time and recomputed in the backward pass
  (jax.checkpoint): one chunk's [..., chunk, V] float32 logits are alive instead of all of them
  (16 thoughts of 2048 tokens over a 152k vocabulary are 19 GiB of logits per document).
  Returns (logp [..., T], entropy [..., T] without gradient); equal to token_logp / entropy on
  the full logits."""
  t = h_xTxD.shape[-2]
  chunk = max(1, min(chunk, t))
  pad = -t % chunk
  if pad:
    h_xTxD = jnp.pad(h_xTxD, [(0, 0)] * (h_xTxD.ndim - 2) + [(0, pad), (0, 0)])
    tokens_xT = jnp.pad(tokens_xT, [(0, 0)] * (tokens_xT.ndim - 1) + [(0, pad)])
  lead = h_xTxD.shape[:-2]
  n = h_xTxD.shape[-2] // chunk
  hs = jnp.moveaxis(h_xTxD.reshape(*lead, n, chunk, h_xTxD.shape[-1]), -3, 0)
  ts = jnp.moveaxis(tokens_xT.reshape(*lead, n, chunk), -2, 0)

  @jax.checkpoint
  def one(xs):
    hc, tc = xs
    pl = head(hc).astype(jnp.float32)
    pl = pl if temperature == 0 else pl / temperature
    lse = jax.nn.logsumexp(pl, axis=-1)
    picked = jnp.take_along_axis(pl, tc[..., None], -1)[..., 0]
    p = jax.nn.softmax(jax.lax.stop_gradient(pl), axis=-1)
    ent = jax.lax.stop_gradient(lse) - (p * jax.lax.stop_gradient(pl)).sum(-1)
    return picked - lse, ent

  logp, ent = jax.lax.map(one, (hs, ts))
  back = lambda a: jnp.moveaxis(a, 0, -2).reshape(*lead, n * chunk)[..., :t]  # noqa: E731
  return back(logp), back(ent)


def next_token_loss(logits, targets, mask):
  """Mean next-token cross-entropy over masked positions (CPT; the NTP mixing term)."""
  nll = -token_logp(logits, targets)
  mask = mask.astype(jnp.float32)
  return (nll * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def linear_cross_entropy(x_BxSxD, w_VxD, targets_BxS, mask_BxS, chunk: int = 1024):
  """Masked mean of -log softmax(x w^T)[target] without the [B, S, V] logits.

  The LM head and the loss fused, over chunks of `chunk` sequence positions (a scan; the batch axis
  and its sharding are left alone). Differentiated, it forms d/dx and d/dw chunk by chunk in the
  forward pass (the loss is a scalar, so its cotangent only scales them): the same matmuls as the
  unfused head (one forward, two backward), no recomputation, and the largest live array is one
  chunk's [B, chunk, V] float32 logits instead of the whole batch's (on Llama-3.2-1B's 128k
  vocabulary at 8 x 2048 tokens: 1 GiB instead of 8 GiB, plus the softmax and its gradient).
  x may be bf16 (the matmuls then run in bf16 with float32 accumulation, like `logits`).
  """
  b, s, d = x_BxSxD.shape
  chunk = max(1, min(chunk, s))
  pad = -s % chunk
  mask = mask_BxS.astype(jnp.float32)
  if pad:
    x_BxSxD = jnp.pad(x_BxSxD, ((0, 0), (0, pad), (0, 0)))
    targets_BxS = jnp.pad(targets_BxS, ((0, 0), (0, pad)))
    mask = jnp.pad(mask, ((0, 0), (0, pad)))
  total = _lce(x_BxSxD, w_VxD.astype(x_BxSxD.dtype), targets_BxS.astype(jnp.int32), mask, chunk)
  return total / jnp.maximum(mask.sum(), 1.0)


def _chunks(a, chunk):  # [B, S, ...] -> [S/chunk, B, chunk, ...]
  return jnp.moveaxis(a.reshape(a.shape[0], -1, chunk, *a.shape[2:]), 1, 0)


def _lce_chunk(x, w, t, m):
  logits = jnp.einsum("bcd,vd->bcv", x, w, preferred_element_type=jnp.float32)
  lse = jax.nn.logsumexp(logits, axis=-1)
  picked = jnp.take_along_axis(logits, t[..., None], -1)[..., 0]
  return logits, lse, ((lse - picked) * m).sum()


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _lce(x, w, targets, mask, chunk):
  def body(tot, xs):
    xc, tc, mc = xs
    return tot + _lce_chunk(xc, w, tc, mc)[2], None
  tot, _ = jax.lax.scan(body, jnp.zeros((), jnp.float32),
                        (_chunks(x, chunk), _chunks(targets, chunk), _chunks(mask, chunk)))
  return tot


def _lce_fwd(x, w, targets, mask, chunk):
  def body(carry, xs):
    tot, dw = carry
    xc, tc, mc = xs
    logits, lse, nll = _lce_chunk(xc, w, tc, mc)
    dlogits = jnp.exp(logits - lse[..., None])
    dlogits = dlogits - jax.nn.one_hot(tc, w.shape[0], dtype=dlogits.dtype)
    dlogits = (dlogits * mc[..., None]).astype(x.dtype)
    dx = jnp.einsum("bcv,vd->bcd", dlogits, w, preferred_element_type=jnp.float32)
    dw = dw + jnp.einsum("bcv,bcd->vd", dlogits, xc, preferred_element_type=jnp.float32)
    return (tot + nll, dw), dx.astype(x.dtype)
  init = (jnp.zeros((), jnp.float32), jnp.zeros(w.shape, jnp.float32))
  (tot, dw), dx = jax.lax.scan(body, init, (_chunks(x, chunk), _chunks(targets, chunk),
                                            _chunks(mask, chunk)))
  dx = jnp.moveaxis(dx, 0, 1).reshape(x.shape)
  return tot, (dx, dw.astype(w.dtype))


def _lce_bwd(chunk, res, g):
  dx, dw = res
  return (dx * g.astype(dx.dtype), dw * g.astype(dw.dtype), None, None)


_lce.defvjp(_lce_fwd, _lce_bwd)


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
