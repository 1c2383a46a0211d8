"""The rewards and the update's losses: a rollout's rewards (`rewards`: RLP's information gain,
over one token or several, or RPT's byte match), the clipped policy-gradient surrogate over
thought tokens with its optional KL, scorer and next-token terms (`policy_loss`), its gradient
over micro-batches or through the rollout's shared prefix (`policy_grads`), and the fused
next-token loss CPT shares. Functions of params and arrays; the steps that call them are
rlp/trainer.py."""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
from flax import nnx

from models import sampling

from rlp import objective as objective_lib
from rlp import positions as positions_lib
from rlp import sampler as sampler_lib

if TYPE_CHECKING:  # the step's config type; trainer imports this module
  from rlp.trainer import StepConfig

RATIO_MAX = "rlp/ratio_max"  # the one loss metric reduced by max (over micro-batches, updates)


def chunk_size(cfg: StepConfig) -> int:
  """cfg.loss_chunk resolved: -1 = 1024 on accelerators, 0 (the full logits) on CPU."""
  if cfg.loss_chunk < 0:
    return 0 if jax.default_backend() == "cpu" else 1024
  return cfg.loss_chunk


def next_token_loss(model, inputs, targets, mask, cfg: StepConfig, positions=None,
                     segment_ids=None):
  chunk = chunk_size(cfg)
  if chunk > 0:
    h = model.hidden(inputs, positions, segment_ids)
    return objective_lib.linear_cross_entropy(h, model.head_weight(), targets, mask, chunk)
  logits = model(inputs, positions=positions, segment_ids=segment_ids)
  return objective_lib.next_token_loss(logits, targets, mask)


def rpt_rewards(pred_BxKxG, tokens, cuts, vocab_bytes, vocab_len, lookahead):
  """1 if the predicted token's bytes are the bytes of x_t .. x_{t+j} for some j < lookahead."""
  b, s = tokens.shape
  idx = jnp.clip(cuts[..., None] + jnp.arange(lookahead), 0, s - 1)  # [B, K, J]
  cont = jnp.take_along_axis(tokens[:, None, :], idx, -1)
  lens = vocab_len[cont]  # [B, K, J]
  cum = jnp.cumsum(lens, -1)
  nbytes = vocab_bytes.shape[-1]
  p = jnp.arange(nbytes)
  which = (cum[..., None, :] <= p[:, None]).sum(-1)  # [B, K, P] token index of byte p
  start = jnp.concatenate([jnp.zeros_like(cum[..., :1]), cum[..., :-1]], -1)
  which_c = jnp.clip(which, 0, lookahead - 1)
  off = p - jnp.take_along_axis(start, which_c, -1)
  tok_at = jnp.take_along_axis(cont, which_c, -1)
  cont_bytes = jnp.where(which < lookahead, vocab_bytes[tok_at, jnp.clip(off, 0, nbytes - 1)], -1)
  boundary = jnp.any((p[:, None] + 1) == cum[..., None, :], -1)  # [B, K, P]
  pb = vocab_bytes[jnp.maximum(pred_BxKxG, 0)]  # [B, K, G, P]
  plen = jnp.where(pred_BxKxG >= 0, vocab_len[jnp.maximum(pred_BxKxG, 0)], 0)
  return objective_lib.rpt_reward(pb, plen, cont_bytes[:, :, None], boundary[:, :, None])


def continuation_gain(model, tokens, lengths, cuts, rollout, cfg: StepConfig, s_ema_BxKxN=None,
                      prefix=None):
  """The reward over cfg.reward_tokens = n tokens (a departure from the paper's n = 1): for each
  thought, the sum over j < n of log p_theta(x_{t+j} | x_<t, thought, x_t .. x_{t+j-1}) minus the
  EMA's log p_phi(x_{t+j} | x_<t+j) (s_ema_BxKxN, the step's baseline; None: no baseline), over
  the x_{t+j} inside the document. Teacher-forced: the rollout's thought (closer included) is
  followed by x_t .. x_{t+n-2} and read at the n entries after the closer. prefix: the documents'
  K/V under model when the step has them. Returns the rewards [B, K, G]."""
  n = cfg.reward_tokens
  b, k, g, t = rollout.tokens.shape
  idx = positions_lib.following(cuts, n, tokens.shape[1])  # [B, K, n] positions t + j
  inside = (cuts[..., None] + jnp.arange(n) < lengths[:, None, None]).astype(jnp.float32)
  cont = jnp.take_along_axis(tokens, idx.reshape(b, k * n), 1).reshape(b, k, n)  # x_{t+j}
  cont_g = jnp.broadcast_to(cont[:, :, None, :], (b, k, g, n))
  n_valid = rollout.valid.sum(-1)  # [B, K, G] thought tokens incl. the closer
  # the buffer: the thought, then x_t .. x_{t+n-2} from entry n_valid on
  rel = jnp.arange(t + n - 1) - n_valid[..., None]  # [B, K, G, T + n - 1]
  buf = jnp.concatenate([rollout.tokens, jnp.zeros((b, k, g, n - 1), rollout.tokens.dtype)], -1)
  buf = jnp.where((rel >= 0) & (rel < n - 1),
                  jnp.take_along_axis(cont_g, jnp.clip(rel, 0, n - 1), -1), buf)
  h = sampler_lib.thought_logits(model, tokens, cuts, buf, cfg.sampler, prefix=prefix,
                                 with_next=True, hidden=True)  # entry n_valid + j predicts x_{t+j}
  h_at = jnp.take_along_axis(h, (n_valid[..., None] + jnp.arange(n))[..., None], 3)
  s_pred = objective_lib.token_logp(model.head(h_at), cont_g)  # [B, K, G, n]
  baseline = 0.0 if s_ema_BxKxN is None else s_ema_BxKxN[:, :, None, :]
  return ((s_pred - baseline) * inside[:, :, None, :]).sum(-1)


def rewards(rollout: sampler_lib.Rollout, s_ema, batch, cuts, cfg: StepConfig, vocab_bytes,
            vocab_len, policy_old=None, prefix=None):
  """(rewards [B, K, G], metrics) of a rollout: RLP's information gain S_pred - S_ema (s_ema
  [B, K] at the targets; over cfg.reward_tokens = n > 1 tokens `continuation_gain` from
  policy_old, s_ema then [B, K, n], prefix the documents' K/V under policy_old when the step has
  them) or RPT's match (vocab_bytes / vocab_len: the tokenizer's token bytes), then the
  truncated-thought shaping. batch: the step's DocBatch; cuts: the targets' positions."""
  metrics = {}
  tokens = batch.tokens
  if cfg.objective == "rlp":
    if cfg.reward_tokens > 1:
      reward = continuation_gain(policy_old, tokens, batch.lengths, cuts, rollout, cfg,
                                 s_ema if cfg.compute_ema else None, prefix)
      s_ema = None if s_ema is None else s_ema[..., 0]  # at x_t, for the metrics
    s_ema = s_ema[..., None] if s_ema is not None else jnp.zeros(cuts.shape + (1,))
    if cfg.reward_tokens == 1:
      reward = objective_lib.information_gain(rollout.s_pred, s_ema)
    metrics.update({"rlp/s_pred_mean": rollout.s_pred.mean(), "rlp/s_ema_mean": s_ema.mean()
                    if cfg.compute_ema else jnp.nan,
                    "rlp/gain_positive_frac": (reward > 0).mean() if cfg.compute_ema else jnp.nan})
  else:
    reward = rpt_rewards(rollout.prediction, tokens, cuts, vocab_bytes, vocab_len,
                         cfg.rpt_lookahead)
  if cfg.truncated_reward != "keep":
    cut_value = 0.0 if cfg.truncated_reward == "zero" else float(cfg.truncated_reward)
    reward = jnp.where(rollout.truncated, cut_value, reward)
  return reward, metrics


def policy_loss(params, graphdef, mb, cfg: StepConfig, ref_params, w=None, prefix=None):
  """The update's loss on a (mini/micro)batch of documents and their thoughts.

  prefix: None (the documents' K/V are computed here, from params), or those K/V as an input:
  the loss is then differentiated with respect to them and the caller carries their gradient
  back to the params (policy_grads).

  w: None, or the weights of one micro-batch of a gradient-accumulated batch ({"seq", "tok",
  "doc"}: its share of the batch's thoughts with tokens, thought tokens, document tokens). Each
  mean in the loss and the metrics is then scaled by the share of its own denominator, so the
  micro-batches' sums are exactly the whole batch's means.
  """
  scfg = cfg.sampler
  model = nnx.merge(graphdef, params)
  scorer = cfg.scorer_weight > 0
  chunk = chunk_size(cfg)  # > 0: the head over thought tokens in chunks, never all the logits
  out = sampler_lib.thought_logits(model, mb.tokens, mb.cuts, mb.thought, scfg, prefix=prefix,
                                   with_next=scorer, hidden=chunk > 0)
  if scorer:  # entry n_valid predicts x_t after the whole thought (closer included)
    after = jnp.take_along_axis(out, mb.n_valid[..., None, None], 3)[..., 0, :]
    after = model.head(after) if chunk else after
    s_pred = objective_lib.token_logp(after, jnp.broadcast_to(mb.targets[..., None], after.shape[:-1]))
    out = out[..., :-1, :]
  logp, entropy = _thought_logp(model, out, mb, scfg.temperature, chunk)
  loss, m = objective_lib.clipped_surrogate_loss(logp, mb.old_logp, mb.adv, mb.mask, cfg.eps_low,
                                                 cfg.eps_high, cfg.normalize, return_metrics=True)
  # named as logged: rlp/clip_frac, rlp/ratio_mean, rlp/ratio_max (a max over micro-batches and
  # updates, every other metric a mean), rlp/entropy, rlp/kl, rlp/scorer_nll; pg_loss, ntp_loss
  m = {f"rlp/{k}": v for k, v in m.items()}
  m["rlp/entropy"] = jax.lax.stop_gradient(entropy)
  w_tok = 1.0 if w is None else w["tok"]
  if w is not None:
    loss = loss * (w["seq"] if cfg.normalize == "sequence" else w["tok"])
    m = {k: v if k == RATIO_MAX else v * w_tok for k, v in m.items()}
  m["pg_loss"] = loss
  loss = cfg.policy_weight * loss
  if cfg.kl_beta > 0:
    ref = nnx.merge(graphdef, ref_params)
    ref_out = sampler_lib.thought_logits(ref, mb.tokens, mb.cuts, mb.thought, scfg,
                                         hidden=chunk > 0)
    ref_logp = _thought_logp(ref, ref_out, mb, scfg.temperature, chunk)[0]
    kl = objective_lib.kl_estimate(logp, jax.lax.stop_gradient(ref_logp), mb.mask,
                                   cfg.kl_estimator) * w_tok
    loss = loss + cfg.kl_beta * kl
    m["rlp/kl"] = kl
  if scorer:
    nll = -s_pred.mean() * (1.0 if w is None else w["seq"])
    loss = loss + cfg.scorer_weight * nll
    m["rlp/scorer_nll"] = nll
  if cfg.ntp_weight > 0:
    valid = doc_targets(mb)
    ntp = next_token_loss(model, mb.tokens[:, :-1], mb.tokens[:, 1:], valid, cfg)
    ntp = ntp * (1.0 if w is None else w["doc"])
    loss = loss + cfg.ntp_weight * ntp
    m["ntp_loss"] = ntp
  return loss, m


def _thought_logp(model, out, mb, temperature: float, chunk: int):
  """(log-probs of the thought tokens under the sampling policy, their mean entropy over the
  sampled tokens) from `sampler.thought_logits`' output: logits, or with chunk > 0 hidden states
  the head reads `chunk` positions at a time."""
  if chunk:
    logp, ent = objective_lib.chunked_policy_logp(out, model.head, mb.thought, temperature, chunk)
    mask = mb.mask.astype(jnp.float32)
    return logp, (ent * mask).sum() / jnp.maximum(mask.sum(), 1.0)
  pl = sampling.policy_logits(out, temperature)
  return objective_lib.token_logp(pl, mb.thought), objective_lib.entropy(pl, mb.mask)


def doc_targets(mb):
  return jnp.arange(mb.tokens.shape[1] - 1)[None] < (mb.lengths[:, None] - 1)


def _micro_weights(micro):
  """Per micro-batch ([A] arrays) shares of the batch's denominators (see policy_loss)."""
  def share(x_A):
    return x_A / jnp.maximum(x_A.sum(), 1.0)
  axes = tuple(range(1, micro.mask.ndim))
  return {"seq": share((micro.mask.sum(-1) > 0).sum(axes[:-1]).astype(jnp.float32)),
          "tok": share(micro.mask.sum(axes)),
          "doc": share(jax.vmap(lambda m: doc_targets(m).sum())(micro).astype(jnp.float32))}


def policy_grads(params, graphdef, mb, cfg: StepConfig, ref_params, prefix=None):
  """(loss, metrics), grads of the update on mb (an UpdateBatch); with cfg.grad_accum = A > 1 the
  documents are split into A micro-batches whose gradients are summed in a scan (one
  micro-batch's activations live at a time), exactly the gradient of the whole batch.

  prefix: None, or ((k, v), vjp) from `jax.vjp` of the documents' prefix_kv at params (the step
  computed it once for the rollout): the loss takes the K/V as an input and their gradient goes
  back through vjp, the same gradient without a second forward over the documents."""
  grad_fn = jax.value_and_grad(policy_loss, has_aux=True)
  n = cfg.grad_accum
  if prefix is not None:
    if n != 1:
      raise ValueError("a shared prefix is for one micro-batch (grad_accum 1)")
    kv, prefix_vjp = prefix
    loss_of = lambda p, kv: policy_loss(p, graphdef, mb, cfg, ref_params, prefix=kv)  # noqa: E731
    (loss, m), (grads, g_kv) = jax.value_and_grad(loss_of, argnums=(0, 1), has_aux=True)(params, kv)
    return (loss, m), jax.tree.map(jnp.add, grads, prefix_vjp(g_kv)[0])
  if n == 1:
    return grad_fn(params, graphdef, mb, cfg, ref_params)
  micro = jax.tree.map(lambda a: a.reshape(n, a.shape[0] // n, *a.shape[1:]), mb)
  weights = _micro_weights(micro)

  def body(g_acc, xs):
    mi, wi = xs
    (loss, m), g = grad_fn(params, graphdef, mi, cfg, ref_params, wi)
    return jax.tree.map(jnp.add, g_acc, g), (loss, m)

  zeros = jax.tree.map(jnp.zeros_like, params)
  grads, (loss, m) = jax.lax.scan(body, zeros, (micro, weights))
  m = {k: v.max() if k == RATIO_MAX else v.sum() for k, v in m.items()}
  return (loss.sum(), m), grads
