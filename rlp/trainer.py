"""Pure train steps for RLP, CPT and RPT over one functional TrainState.

    state, metrics = step(state, batch)

Each step is jitted once by `make_step` (static: graphdef, optimizer, step config) with the state
donated. RLP and RPT share the rollout (rlp/sampler.py) and the policy-gradient updates
(`_updates`); CPT (and the thought-format warm-up, which is CPT on thought-formatted text) is plain
next-token loss.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, struct

from models import backend
from rlp import batches
from rlp import objective as objective_lib
from rlp import policy
from rlp import positions as positions_lib
from rlp import sampler as sampler_lib
from rlp import schema
from rlp.schema import OBJECTIVES


@struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  ema: Any  # phi: EMA of params (RLP's no-think baseline)
  ref: Any  # frozen reference for the KL term; None when kl_beta == 0
  opt_state: Any
  rng: jax.Array  # raw uint32 key data (jax.random.key_data), so checkpoints are plain arrays
  skips: jax.Array  # consecutive non-finite updates skipped


@struct.dataclass
class UpdateBatch:
  """What an update learns from: the documents, their targets and the rollout's thoughts."""
  tokens: jax.Array  # [B, S] documents
  lengths: jax.Array  # [B]
  cuts: jax.Array  # [B, K] target positions t
  targets: jax.Array  # [B, K] x_t
  thought: jax.Array  # [B, K, G, T] thought tokens incl. the closer
  old_logp: jax.Array  # [B, K, G, T] sampling log-probs (theta_old)
  adv: jax.Array  # [B, K, G] advantages
  mask: jax.Array  # [B, K, G, T] float: tokens that get gradient
  n_valid: jax.Array  # [B, K, G] thought tokens incl. the closer (the scorer's read position)

  @classmethod
  def from_rollout(cls, tokens, lengths, cuts, rollout: sampler_lib.Rollout, adv,
                   mask=None) -> "UpdateBatch":
    """mask: the rollout's sampled tokens unless given (dynamic sampling drops groups)."""
    return cls(tokens=tokens, lengths=lengths, cuts=cuts, targets=rollout.targets,
               thought=rollout.tokens, old_logp=rollout.logp, adv=adv,
               mask=rollout.mask.astype(jnp.float32) if mask is None else mask,
               n_valid=rollout.valid.sum(-1).astype(jnp.int32))


@dataclasses.dataclass(frozen=True)
class StepConfig:
  """What a jitted step computes. The fields declared `from_run` are the run config's fields of
  that path (their default, allowed values and help live in rlp/schema.py, and a StepConfig
  holding a value outside them is refused when built); the others are derived from the run by
  `configuration.step_config`."""
  objective: str = schema.from_run("objective")
  sampler: sampler_lib.SamplerConfig = sampler_lib.SamplerConfig()
  eps_low: float = schema.from_run("rlp.eps_low")
  eps_high: float = schema.from_run("rlp.eps_high")
  normalize: str = schema.from_run("rlp.normalize")
  adv_scale: str = schema.from_run("rlp.adv_scale")
  kl_beta: float = schema.from_run("rlp.kl_beta")
  kl_estimator: str = schema.from_run("rlp.kl_estimator")
  # reward of a thought cut at the length limit: "keep" its information gain (the paper), "zero",
  # or a number (ProRL-style shaping); derived from rlp.truncated_reward's text
  truncated_reward: str | float = "keep"
  dynamic_sampling: bool = schema.from_run("rlp.dynamic_sampling")
  ema_tau: float = schema.from_run("rlp.ema_tau")
  num_updates: int = schema.from_run("rlp.num_updates")
  minibatches: int = schema.from_run("rlp.minibatches")
  grad_accum: int = schema.from_run("rlp.grad_accum")
  rollout_batch: int = schema.from_run("rlp.rollout_batch")
  ntp_weight: float = schema.from_run("rlp.ntp_weight")
  scorer_weight: float = schema.from_run("rlp.scorer_weight")
  policy_weight: float = schema.from_run("rlp.policy_weight")
  shuffle_rewards: bool = schema.from_run("rlp.shuffle_rewards")
  baseline_exclude: int | None = None  # a dedicated <think> id left out of S_ema (see token_logp)
  compute_ema: bool = schema.from_run("rlp.compute_ema")
  reward_tokens: int = schema.from_run("rlp.reward_tokens")
  # uniform / marker: positions come with the batch; entropy / low_logp: the K positions of
  # highest EMA entropy / lowest EMA log-prob per document, chosen inside the step
  selection: str = schema.from_run("data.selection")
  positions_per_doc: int = schema.from_run("data.positions_per_doc")
  min_prefix: int = schema.from_run("data.min_prefix")
  rpt_lookahead: int = schema.from_run("rlp.rpt_lookahead")
  # Next-token losses (CPT, the NTP term) fuse the LM head with the loss over chunks of this many
  # positions (objective.linear_cross_entropy), and the policy loss applies the head to that many
  # thought positions at a time (objective.chunked_policy_logp); 0 materialises the logits; -1 =
  # auto, resolved when the step is built (`resolve`): fused on accelerators, unfused on CPU.
  loss_chunk: int = schema.from_run("train.loss_chunk")
  # uniform / marker selection: apply the EMA head at the K positions only (True) or to every
  # position and read the K (False); None = decided when the step is built (resolve)
  ema_head_at_positions: bool | None = None

  def __post_init__(self):
    schema.check_from_run(self)

  @property
  def needs_ema_forward(self) -> bool:
    return self.objective == "rlp" and (self.compute_ema or self.scored_selection)

  @property
  def scored_selection(self) -> bool:
    return self.selection in positions_lib.SCORED


def make_optimizer(lr: float, warmup_steps: int = 0, total_steps: int = 0,
                   schedule: str = "constant", weight_decay: float = 0.0, b1: float = 0.9,
                   b2: float = 0.999, grad_clip: float = 1.0):
  if schedule == "constant":
    sched = optax.constant_schedule(lr) if not warmup_steps else optax.join_schedules(
        [optax.linear_schedule(0.0, lr, warmup_steps), optax.constant_schedule(lr)],
        [warmup_steps])
  elif schedule == "cosine":
    sched = optax.warmup_cosine_decay_schedule(0.0, lr, max(warmup_steps, 1),
                                               max(total_steps, warmup_steps + 1))
  else:
    raise ValueError(f"schedule must be 'constant' or 'cosine' (got {schedule!r})")
  chain = [optax.clip_by_global_norm(grad_clip)] if grad_clip > 0 else []
  chain.append(optax.inject_hyperparams(optax.adamw)(learning_rate=sched, b1=b1, b2=b2,
                                                     weight_decay=weight_decay))
  return optax.chain(*chain)


def init_state(model, tx, seed: int = 0, kl_beta: float = 0.0) -> TrainState:
  """Params (and EMA, ref, Adam moments) are plain nested dicts of arrays: nnx.merge(graphdef,
  params) rebuilds the model inside jit, and orbax / sharding see ordinary pytrees."""
  # a copy: the steps donate the state, which must not delete the model's own arrays
  params = jax.tree.map(jnp.copy, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
  # EMA lazy init phi <- theta on the first batch: identical to copying theta here.
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    ema=jax.tree.map(jnp.copy, params),
                    ref=jax.tree.map(jnp.copy, params) if kl_beta > 0 else None,
                    opt_state=tx.init(params), rng=jax.random.key_data(jax.random.key(seed)),
                    skips=jnp.zeros((), jnp.int32))


def restart(state: TrainState, *, params=None, tx=None, ema: bool = False,
            ref: bool = False) -> TrainState:
  """The one place parts of the state restart at `params` (default: the state's own): the EMA
  teacher (ema=True), the KL reference when one is kept (ref=True), a fresh optimizer state
  (tx given: moments zero, schedule count 0). Step, rng and everything not named continue."""
  params = state.params if params is None else params
  copy = lambda: jax.tree.map(jnp.copy, params)
  return state.replace(params=params, ema=copy() if ema else state.ema,
                       ref=copy() if ref and state.ref is not None else state.ref,
                       opt_state=tx.init(params) if tx is not None else state.opt_state)


def reset_reference(state: TrainState, tx) -> TrainState:
  """ProRL's reference reset: ref <- the current params (when a reference is kept) and a fresh
  optimizer state (moments zero, schedule count 0); step, EMA and rng continue."""
  return restart(state, tx=tx, ref=True)


def _lr(opt_state):
  for s in jax.tree.leaves(opt_state, is_leaf=lambda x: hasattr(x, "hyperparams")):
    if hasattr(s, "hyperparams"):
      return s.hyperparams["learning_rate"]
  return jnp.zeros(())


def apply_update(state, grads, loss, tx, cfg: StepConfig):
  """Optimizer step (+ EMA update for RLP), skipped if the loss or a gradient is not finite.

  A lax.cond, not a where-select over every tree: the skip costs nothing when it does not fire
  (selecting params and Adam moments elementwise read and wrote them twice more every step).
  """
  finite = jnp.isfinite(loss) & jnp.all(jnp.asarray(
      [jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
  tau = cfg.ema_tau
  with_ema = cfg.objective == "rlp"  # CPT / RPT have no EMA teacher

  def update(operand):
    params, opt_state, ema, grads = operand
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    if with_ema:
      ema = jax.tree.map(lambda e, p: tau * e + (1 - tau) * p, ema, params)
    return params, opt_state, ema

  def skip(operand):
    return operand[:3]

  params, opt_state, ema = jax.lax.cond(finite, update, skip,
                                        (state.params, state.opt_state, state.ema, grads))
  grad_norm = jnp.where(finite, optax.global_norm(grads), jnp.nan)
  metrics = {"grad_norm": grad_norm, "skipped": 1.0 - finite.astype(jnp.float32)}
  state = state.replace(params=params, opt_state=opt_state, ema=ema,
                        skips=jnp.where(finite, 0, state.skips + 1))
  return state, metrics


# ---------------------------------------------------------------- CPT / warm-up
def cpt_step(state: TrainState, batch, *, graphdef, tx, cfg: StepConfig):
  """batch: an LMBatch (packed documents, [B, S]) or a mapping with its fields."""
  batch = batches.LMBatch.of(batch)

  def loss_fn(params):
    model = nnx.merge(graphdef, params)
    return policy.next_token_loss(model, batch.inputs, batch.targets, batch.loss_mask, cfg,
                                  batch.positions, batch.segment_ids)

  loss, grads = jax.value_and_grad(loss_fn)(state.params)
  state, m = apply_update(state, grads, loss, tx, cfg)
  n_tok = batch.loss_mask.sum()
  metrics = {"loss": loss, "cpt/nll": loss, "lr": _lr(state.opt_state), "tokens": n_tok, **m}
  return state.replace(step=state.step + 1), metrics, None


# ---------------------------------------------------------------- RLP / RPT
def ema_scores(ema_params, graphdef, tokens, cfg: StepConfig):
  """EMA model on the plain documents: log p_phi(x_t | x_<t) and entropy at every t ([B, S])."""
  return positions_lib.token_scores(nnx.merge(graphdef, ema_params), tokens, cfg.baseline_exclude)


def ema_logp_at(ema_params, graphdef, tokens, cuts_BxK, exclude=None):
  """log p_phi(x_t | x_<t) at the K positions t of each document only ([B, K]): the EMA trunk
  runs over the documents, the LM head only at the K positions (uniform selection needs neither
  the other positions' logits nor the entropies)."""
  model = nnx.merge(graphdef, ema_params)
  h = model.hidden(tokens)
  h_at = jnp.take_along_axis(h, jnp.maximum(cuts_BxK - 1, 0)[..., None], 1)  # predicts x_t
  lp = objective_lib.token_logp(model.head(h_at), jnp.take_along_axis(tokens, cuts_BxK, 1), exclude)
  return jnp.where(cuts_BxK > 0, lp, 0.0)


def _score_only_at_positions() -> bool:
  """The EMA head at the K positions only, except over several CPU devices, where the gathered
  program can deadlock XLA:CPU's in-process collectives (an all-reduce rendezvous with the fake
  devices waiting at different collectives); there every position is scored and read at the K."""
  return jax.default_backend() != "cpu" or jax.device_count() == 1


def resolve(cfg: StepConfig) -> StepConfig:
  """The backend-dependent choices fixed once, when a step is built, so the step itself is a pure
  function of its config: loss_chunk -1 (auto) and where the EMA head is applied."""
  return dataclasses.replace(
      cfg, loss_chunk=policy.chunk_size(cfg),
      ema_head_at_positions=(_score_only_at_positions() if cfg.ema_head_at_positions is None
                             else cfg.ema_head_at_positions))


def _positions_and_baseline(state: TrainState, batch: batches.DocBatch, graphdef,
                            cfg: StepConfig):
  """The K target positions of each document and the no-think baseline there: (cuts [B, K],
  S_ema = log p_phi(x_t | x_<t) [B, K] or None when nothing needs it; with rlp.reward_tokens
  n > 1, S_ema at t .. t + n - 1, [B, K, n])."""
  tokens, n = batch.tokens, cfg.reward_tokens
  if cfg.scored_selection:  # the EMA model picks its highest-entropy / lowest-log-prob tokens
    return positions_lib.scored_positions(nnx.merge(graphdef, state.ema), tokens, batch.lengths,
                                          cfg.selection, cfg.positions_per_doc, cfg.min_prefix,
                                          cfg.baseline_exclude, n)
  cuts = batch.cuts
  if not cfg.needs_ema_forward:
    return cuts, None
  if resolve(cfg).ema_head_at_positions:
    at = cuts if n == 1 else positions_lib.following(cuts, n, tokens.shape[1]).reshape(
        cuts.shape[0], -1)
    s_ema = ema_logp_at(state.ema, graphdef, tokens, at, cfg.baseline_exclude)
    return cuts, s_ema.reshape(cuts.shape + ((n,) if n > 1 else ()))
  return cuts, positions_lib.at_targets(ema_scores(state.ema, graphdef, tokens, cfg)[0], cuts, n)


def _updates(state: TrainState, data: UpdateBatch, graphdef, tx, cfg: StepConfig, prefix=None):
  """cfg.num_updates passes over cfg.minibatches minibatches of the documents, each one
  optimizer (and EMA) update; returns the state and the updates' metrics, averaged. prefix: see
  policy_grads (only for one update over the whole batch: _shares_prefix)."""
  n_mb = cfg.minibatches
  b = data.tokens.shape[0]
  mb_size = b // n_mb
  if b % n_mb or mb_size % cfg.grad_accum:
    raise ValueError(f"{b} documents do not split into minibatches={n_mb} x "
                     f"grad_accum={cfg.grad_accum} equal parts")
  per_update = []
  for _ in range(cfg.num_updates):
    for i in range(n_mb):
      minibatch = jax.tree.map(lambda a: a[i * mb_size:(i + 1) * mb_size], data)
      (loss, m), grads = policy.policy_grads(state.params, graphdef, minibatch, cfg, state.ref,
                                                prefix)
      state, opt_metrics = apply_update(state, grads, loss, tx, cfg)
      per_update.append({"loss": loss, **m, **opt_metrics})
  stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *per_update)
  # the metrics as the loss and the optimizer name them; skipped updates are counted
  reduce = {policy.RATIO_MAX: jnp.max, "skipped": jnp.sum}
  return state, {k: reduce.get(k, jnp.mean)(v) for k, v in stacked.items()}


def _shares_prefix(cfg: StepConfig, n_docs: int) -> bool:
  """Whether the rollout and the update use one forward over the documents: the step's only
  update is on the rollout's params (one update of one minibatch), in one micro-batch, and the
  rollout is not chunked (every document's K/V are needed at once either way). Costs holding the
  prefix forward's residuals through the rollout; saves that forward in the update."""
  return (cfg.num_updates == 1 and cfg.minibatches == 1 and cfg.grad_accum == 1
          and (not cfg.rollout_batch or cfg.rollout_batch >= n_docs) and not cfg.sampler.naive)


def pg_step(state: TrainState, batch, *, graphdef, tx, cfg: StepConfig, vocab_bytes=None,
            vocab_len=None):
  """One RLP (or RPT) step: positions and baseline -> rollout with theta_old -> rewards and
  group advantages -> `num_updates` clipped-PG updates -> metrics.

  batch: a DocBatch (or a mapping with its fields): tokens [B, S] int32 (documents, padded),
  lengths [B], cuts [B, K] the target positions (uniform / marker selection; chosen inside the
  step for entropy / low_logp, which ignore them).
  """
  batch = batches.DocBatch.of(batch)
  tokens, lengths = batch.tokens, batch.lengths
  rng, k_roll = jax.random.split(jax.random.wrap_key_data(state.rng))
  cuts, s_ema = _positions_and_baseline(state, batch, graphdef, cfg)
  policy_old = nnx.merge(graphdef, jax.lax.stop_gradient(state.params))  # theta_old
  prefix = prefix_kv = None
  if _shares_prefix(cfg, tokens.shape[0]):  # one forward over the documents for both
    prefix = jax.vjp(lambda p: nnx.merge(graphdef, p).prefix_kv(tokens), state.params)
    prefix_kv = jax.lax.stop_gradient(prefix[0])
  rollout = sampler_lib.chunked_rollout_fn(policy_old, tokens, cuts, k_roll, cfg.sampler,
                                           cfg.rollout_batch, prefix_kv)
  rewards, metrics = policy.rewards(rollout, s_ema, batch, cuts, cfg, vocab_bytes, vocab_len,
                                    policy_old, prefix_kv)
  learn_from = rewards
  if cfg.shuffle_rewards:  # placebo RL: each thought gets another thought's reward
    perm = jax.random.permutation(jax.random.fold_in(k_roll, 1), rewards.size)
    learn_from = rewards.reshape(-1)[perm].reshape(rewards.shape)
  adv = objective_lib.group_advantages(learn_from, cfg.adv_scale)
  sampled = rollout.mask.astype(jnp.float32)
  thought_tokens = sampled.sum()
  if cfg.dynamic_sampling:
    uniform = jnp.all(rewards == rewards[..., :1], axis=-1)  # [B, K]: nothing to learn from
    sampled = sampled * (~uniform)[..., None, None]
    metrics["rlp/dropped_group_frac"] = uniform.mean()
  metrics.update({
      "rlp/reward_mean": rewards.mean() if cfg.compute_ema or cfg.objective == "rpt" else jnp.nan,
      "rlp/reward_std": rewards.std(), "rlp/adv_std": adv.std(),
      "rlp/thought_len_mean": rollout.lengths.mean(), "rlp/thought_len_max": rollout.lengths.max(),
      "rlp/truncated_frac": rollout.truncated.mean(),
  })
  data = UpdateBatch.from_rollout(tokens, lengths, cuts, rollout, adv, sampled)
  state, update_metrics = _updates(state, data, graphdef, tx, cfg, prefix)
  metrics.update(update_metrics)
  metrics["lr"] = _lr(state.opt_state)
  metrics["tokens"] = lengths.sum()
  metrics["thought_tokens"] = thought_tokens
  return state.replace(step=state.step + 1, rng=jax.random.key_data(rng)), metrics, rollout


def make_step(graphdef, tx, cfg: StepConfig, tokenizer_bytes: list[bytes] | None = None,
              donate: bool = True, **jit_kw):
  """The jitted step for cfg.objective: (state, batch) -> (state, metrics[, rollout])."""
  if cfg.objective not in OBJECTIVES:
    raise ValueError(f"objective must be one of {OBJECTIVES} (got {cfg.objective!r})")
  cfg = resolve(cfg)
  if cfg.objective == "cpt":
    fn = functools.partial(cpt_step, graphdef=graphdef, tx=tx, cfg=cfg)
  else:
    kw = {}
    if cfg.objective == "rpt":
      if tokenizer_bytes is None:
        raise ValueError("the rpt objective needs the tokenizer's token bytes (tokenizer_bytes)")
      width = max(1, max(len(t) for t in tokenizer_bytes))
      table = np.full((len(tokenizer_bytes), width), -1, np.int32)
      for i, t in enumerate(tokenizer_bytes):
        table[i, :len(t)] = list(t)
      kw = dict(vocab_bytes=jnp.asarray(table),
                vocab_len=jnp.asarray([len(t) for t in tokenizer_bytes], jnp.int32))
    fn = functools.partial(pg_step, graphdef=graphdef, tx=tx, cfg=cfg, **kw)
  return backend.jit(fn, donate_argnums=(0,) if donate else (), **jit_kw)
