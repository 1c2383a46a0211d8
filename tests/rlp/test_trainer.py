"""RLP / CPT / RPT train steps on a tiny model: gradients, EMA, learning signal, regression pins."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import models
from rlp import batches
from rlp import objective as objective_lib
from rlp import policy
from rlp import positions as positions_lib
from rlp import sampler as sampler_lib
from rlp import trainer

CFG = models.ModelConfig(vocab_size=32, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                         head_dim=8, d_ff=64)
SCFG = sampler_lib.SamplerConfig(group_size=4, max_thought_len=3, temperature=1.0, prompt_ids=(29, 30),
                                 close_ids=(31,))
B, SEQ = 4, 12


def _model(seed=0):
  return models.Transformer(CFG, rngs=nnx.Rngs(seed))


def _batch(seed=0, k=2):
  rng = np.random.default_rng(seed)
  d = np.tile(rng.integers(0, 28, (B, 3)), (1, SEQ // 3)).astype(np.int32)
  return dict(tokens=jnp.asarray(d), lengths=jnp.full((B,), SEQ, jnp.int32),
              cuts=jnp.asarray(rng.integers(3, SEQ, (B, k)), jnp.int32))


def _run(step_cfg, lr=1e-3, steps=1, seed=0, batch=None):
  model = _model()
  tx = trainer.make_optimizer(lr)
  state = trainer.init_state(model, tx, seed=seed, kl_beta=step_cfg.kl_beta)
  step = trainer.make_step(nnx.graphdef(model), tx, step_cfg, donate=False)
  out = []
  for i in range(steps):
    state, m, ro = step(state, batch if batch is not None else _batch(i))
    out.append(jax.tree.map(np.asarray, m))
  return state, out, ro


def test_regression_pin_one_step_metrics():
  """A regression pin, not an independent check: the code's own output at one commit, to 6 digits
  on CPU float32, so any change to the numbers is noticed. Update only when a change is meant to
  alter them. The independent checks are the explicit-expression tests below."""
  # two updates on the rollout: the first at rho == 1, where the loss is 0 by construction with
  # group-centred advantages (spec consequence 2), the second after a step, where it is not, so
  # the pinned loss moves with any change to the surrogate, the ratio or the update
  _, (m,), _ = _run(trainer.StepConfig(sampler=SCFG, positions_per_doc=2, num_updates=2))
  got = {k: round(float(m[k]), 6) for k in GOLDEN}
  for k, v in GOLDEN.items():
    assert abs(got[k] - v) <= 2e-6, (k, got[k], v)


GOLDEN = {"loss": -0.000886, "grad_norm": 0.05465, "rlp/ratio_mean": 1.004928,
          "rlp/reward_mean": 0.018209, "rlp/s_pred_mean": -3.454765, "rlp/s_ema_mean": -3.472974,
          "rlp/entropy": 3.460297}


def _explicit_thought_logp(params, docs, cuts, thought, temperature):
  """Independent expression of the policy's thought-token log-probs ([B, K, G, T]): each
  (document, cut, thought) is its own sequence docs[:t] + prompt + thought, run through the
  model's plain causal forward; the sequences are right-padded to one length and run as one
  batch (causal: padding after a sequence changes none of its logits)."""
  model = nnx.merge(nnx.graphdef(_model()), params)
  b, k, g, tb = thought.shape
  p_len = len(SCFG.prompt_ids)
  length = docs.shape[1] + p_len + tb
  seqs, rows = [], []
  for i in range(b):
    for j in range(k):
      t = int(cuts[i, j])
      for h in range(g):
        seq = np.concatenate([np.asarray(docs[i, :t]), SCFG.prompt_ids,
                              np.asarray(thought[i, j, h])])
        seqs.append(np.pad(seq, (0, length - len(seq))))
        rows.append(t + p_len - 1)  # logits[start - 1 + n] predict thought token n
  logits = model(jnp.asarray(np.stack(seqs), jnp.int32)) / temperature
  flat = thought.reshape(b * k * g, tb)
  lp = jnp.stack([objective_lib.token_logp(logits[r, first:first + tb], flat[r])
                  for r, first in enumerate(rows)])
  return lp.reshape(b, k, g, tb)


def _explicit_loss(params, docs, cuts, thought, mask, adv, temperature):
  """The paper's loss from _explicit_thought_logp, A held fixed, sequence normalisation."""
  lp = _explicit_thought_logp(params, docs, cuts, thought, temperature)
  m = mask.astype(jnp.float32)
  ratio = jnp.exp(lp - jax.lax.stop_gradient(lp))
  per_thought = -(ratio * adv[..., None] * m).sum(-1) / m.sum(-1)
  return per_thought.mean()


@pytest.mark.parametrize("scfg", [SCFG, dataclasses.replace(SCFG, temperature=0.7, top_k=5,
                                                             top_p=0.9)],
                         ids=["T1", "T0.7-topk5-topp0.9"])
def test_only_thought_tokens_are_trained(scfg):
  model = _model()
  state = trainer.init_state(model, trainer.make_optimizer(1e-3))
  batch = _batch(1)
  ro = sampler_lib.rollout(model, batch["tokens"], batch["cuts"], jax.random.key(0), scfg)
  adv = objective_lib.group_advantages(jax.random.normal(jax.random.key(1), ro.s_pred.shape))
  mb = trainer.UpdateBatch.from_rollout(batch["tokens"], batch["lengths"], batch["cuts"], ro, adv)
  cfg = trainer.StepConfig(sampler=scfg)
  (loss0, _), g_ours = jax.jit(jax.value_and_grad(
      lambda p: policy.policy_loss(p, nnx.graphdef(model), mb, cfg, None), has_aux=True))(
          state.params)
  g_ref = jax.grad(_explicit_loss)(state.params, batch["tokens"], batch["cuts"], ro.tokens,
                                   ro.mask, adv, scfg.temperature)
  # the rollout's old log-probs are the tempered, unfiltered policy's: ratio 1 at the start
  assert abs(float(loss0)) < 1e-5
  for a, b in zip(jax.tree.leaves(g_ours), jax.tree.leaves(g_ref)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-6, rtol=1e-4)
  assert max(float(jnp.abs(a).max()) for a in jax.tree.leaves(g_ours)) > 1e-4


def test_s_ema_constant_leaves_advantages_and_gradient_unchanged():
  s_pred = jax.random.normal(jax.random.key(0), (B, 2, 4))
  s_ema = jax.random.normal(jax.random.key(1), (B, 2, 1))
  shift = jax.random.normal(jax.random.key(2), (B, 2, 1)) * 5
  a1 = objective_lib.group_advantages(objective_lib.information_gain(s_pred, s_ema))
  a2 = objective_lib.group_advantages(objective_lib.information_gain(s_pred, s_ema + shift))
  np.testing.assert_allclose(np.asarray(a1), np.asarray(a2), atol=1e-5)
  logp = jax.random.normal(jax.random.key(3), (B, 2, 4, 3))
  mask = jnp.ones_like(logp)
  f = lambda lp, a: objective_lib.clipped_surrogate_loss(lp, jax.lax.stop_gradient(lp), a, mask)
  np.testing.assert_allclose(np.asarray(jax.grad(f)(logp, a1)), np.asarray(jax.grad(f)(logp, a2)),
                             atol=1e-6)


def test_ema_is_closed_form_of_parameter_history():
  tau, n = 0.5, 4
  model = _model()
  tx = trainer.make_optimizer(1e-2)
  state = trainer.init_state(model, tx)
  step = trainer.make_step(nnx.graphdef(model), tx, trainer.StepConfig(sampler=SCFG, ema_tau=tau),
                           donate=False)
  history = [state.params]
  for i in range(n):
    state, m, _ = step(state, _batch(i))
    assert float(m["skipped"]) == 0
    history.append(state.params)
  # phi_0 = theta_0 (lazy init); phi_n = tau^n theta_0 + sum_k (1 - tau) tau^(n-k) theta_k
  want = jax.tree.map(lambda *ps: tau ** n * ps[0] + sum((1 - tau) * tau ** (n - k) * ps[k]
                                                         for k in range(1, n + 1)), *history)
  for a, b in zip(jax.tree.leaves(state.ema), jax.tree.leaves(want)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
  assert max(float(jnp.abs(a - b).max()) for a, b in
             zip(jax.tree.leaves(state.ema), jax.tree.leaves(history[-1]))) > 1e-4


def test_cpt_keeps_no_ema():
  model = _model()
  tx = trainer.make_optimizer(1e-2)
  state = trainer.init_state(model, tx)
  step = trainer.make_step(nnx.graphdef(model), tx, trainer.StepConfig(objective="cpt"), donate=False)
  x = jnp.asarray(np.random.default_rng(0).integers(0, 32, (2, 9)), jnp.int32)
  new, _, _ = step(state, dict(inputs=x[:, :-1], targets=x[:, 1:], loss_mask=jnp.ones((2, 8))))
  for a, b in zip(jax.tree.leaves(new.ema), jax.tree.leaves(state.ema)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_rlp_increases_information_gain_on_fixed_contexts():
  """A real learning signal: the policy learns thoughts that raise log p(x_t) over the EMA; the
  same run with the rewards shuffled across the batch (placebo RL: the update's form without its
  signal) does not."""
  scfg = sampler_lib.SamplerConfig(group_size=8, max_thought_len=2, temperature=1.0, prompt_ids=(30,),
                                   close_ids=(31,))
  batch = _batch(0)
  curves = {}
  for shuffle in (False, True):
    _, ms, _ = _run(trainer.StepConfig(sampler=scfg, positions_per_doc=2, shuffle_rewards=shuffle),
                    lr=1e-3, steps=20, batch=batch)
    curves[shuffle] = np.asarray([float(m["rlp/reward_mean"]) for m in ms])
  rise = {k: r[-5:].mean() - r[:2].mean() for k, r in curves.items()}
  assert rise[False] > 0.02 and rise[False] > rise[True] + 0.02, (rise, curves)


def test_cpt_reduces_next_token_loss():
  model = _model()
  tx = trainer.make_optimizer(3e-3)
  state = trainer.init_state(model, tx)
  step = trainer.make_step(nnx.graphdef(model), tx, trainer.StepConfig(objective="cpt"))
  x = jnp.asarray(np.tile(np.arange(8), (4, 3))[:, :17], jnp.int32)
  batch = dict(inputs=x[:, :-1], targets=x[:, 1:], loss_mask=jnp.ones((4, 16)))
  losses = []
  for _ in range(15):
    state, m, _ = step(state, batch)
    losses.append(float(m["loss"]))
  assert losses[-1] < 0.7 * losses[0]


def test_multiple_updates_make_the_clip_matter():
  _, (m,), _ = _run(trainer.StepConfig(sampler=SCFG, positions_per_doc=2, num_updates=3,
                                       minibatches=2, eps_low=0.01, eps_high=0.01), lr=1e-2)
  assert float(m["rlp/ratio_max"]) > 1.0 + 1e-4
  assert float(m["rlp/clip_frac"]) > 0.0


def test_kl_term_is_the_k3_estimate_against_the_reference():
  """rlp/kl is the mean k3 estimate exp(ref - pol) - (ref - pol) - 1 over the sampled thought
  tokens, with both log-probs from explicit forwards (a reference unlike the policy)."""
  model = _model()
  tx = trainer.make_optimizer(1e-3)
  ref = nnx.to_pure_dict(nnx.state(_model(seed=7), nnx.Param))
  state = trainer.init_state(model, tx, kl_beta=0.1).replace(ref=ref)
  step = trainer.make_step(nnx.graphdef(model), tx,
                           trainer.StepConfig(sampler=SCFG, positions_per_doc=2, kl_beta=0.1),
                           donate=False)
  batch = _batch(0)
  _, m, ro = step(state, batch)
  pol = _explicit_thought_logp(state.params, batch["tokens"], ro.cuts, ro.tokens, SCFG.temperature)
  r = _explicit_thought_logp(ref, batch["tokens"], ro.cuts, ro.tokens, SCFG.temperature)
  mask = np.asarray(ro.mask, np.float64)
  d = np.asarray(r - pol, np.float64)
  want = ((np.exp(d) - d - 1) * mask).sum() / mask.sum()
  assert want > 0.01
  np.testing.assert_allclose(float(m["rlp/kl"]), want, rtol=2e-4)


def test_ntp_term_is_the_documents_next_token_loss_and_moves_the_update():
  batch = _batch(0)
  state, (m,), _ = _run(trainer.StepConfig(sampler=SCFG, positions_per_doc=2, ntp_weight=0.5),
                        batch=batch)
  logits = _model()(batch["tokens"])[:, :-1]
  want = -float(objective_lib.token_logp(logits, batch["tokens"][:, 1:]).mean())
  np.testing.assert_allclose(float(m["ntp_loss"]), want, rtol=1e-5)
  paper, _, _ = _run(trainer.StepConfig(sampler=SCFG, positions_per_doc=2), batch=batch)
  assert any(not np.allclose(x, y) for x, y in zip(jax.tree.leaves(state.params),
                                                  jax.tree.leaves(paper.params)))


def test_entropy_selection_picks_the_emas_most_uncertain_tokens():
  """selection=entropy: each document's 2 positions t >= min_prefix whose no-thought
  distribution (the EMA's; at the first step the model itself) has the most entropy, computed
  here by a plain forward in numpy."""
  batch = _batch(3)
  _, _, ro = _run(trainer.StepConfig(sampler=SCFG, positions_per_doc=2, selection="entropy",
                                     min_prefix=4), batch=batch)
  logits = np.asarray(_model()(batch["tokens"]), np.float64)[:, :-1]
  lp = logits - logits.max(-1, keepdims=True)
  lp -= np.log(np.exp(lp).sum(-1, keepdims=True))
  ent = -(np.exp(lp) * lp).sum(-1)  # ent[:, t - 1]: the distribution of x_t
  for b in range(B):
    ts = np.arange(4, SEQ)
    want = sorted(ts[np.argsort(-ent[b, ts - 1])[:2]].tolist())
    assert sorted(np.asarray(ro.cuts[b]).tolist()) == want


def test_without_the_ema_forward_the_update_is_the_same():
  """compute_ema=False skips the EMA's no-thought forward: no S_ema (its metrics are NaN), and the
  same update, since the group-centred advantage cancels any per-position baseline."""
  batch = _batch(0)
  alone, (m,), _ = _run(trainer.StepConfig(sampler=SCFG, positions_per_doc=2, compute_ema=False),
                        batch=batch)
  paper, (m0,), _ = _run(trainer.StepConfig(sampler=SCFG, positions_per_doc=2), batch=batch)
  assert np.isnan(m["rlp/s_ema_mean"]) and np.isnan(m["rlp/reward_mean"])
  assert np.isfinite(m0["rlp/s_ema_mean"])
  np.testing.assert_allclose(m["rlp/s_pred_mean"], m0["rlp/s_pred_mean"], rtol=1e-6)
  assert float(m0["grad_norm"]) > 1e-4
  np.testing.assert_allclose(m["grad_norm"], m0["grad_norm"], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(alone.params), jax.tree.leaves(paper.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-5)
  assert trainer.StepConfig(sampler=SCFG, compute_ema=False).needs_ema_forward is False
  assert trainer.StepConfig(sampler=SCFG, compute_ema=False, selection="entropy").needs_ema_forward


def test_scored_positions_respect_bounds_and_never_pick_invalid_ones():
  ent = jnp.asarray([[9.0, 8.0, 1.0, 2.0, 3.0, 7.0], [0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
                     [5.0, 5.0, 1.0, 9.0, 9.0, 9.0]])
  pos = np.asarray(positions_lib.top_positions(ent, jnp.asarray([5, 6, 3]), 2, 2))
  assert sorted(pos[0].tolist()) == [3, 4] and sorted(pos[1].tolist()) == [4, 5]
  # one valid position (t = 2 of a 3-token document): it is repeated, never 0 or a padded t
  assert pos[2].tolist() == [2, 2]


def test_low_logp_selection_runs_and_scores_the_chosen_positions():
  """The step picks each document's 2 least likely tokens under the EMA model (at the start, the
  model itself) and the rollout reports those positions; the run's sample text reads them, not
  the batch's cuts (unused by a scored selection; set to t = 3 < min_prefix here, never chosen)."""
  from rlp import steplog
  batch = dict(_batch(0), cuts=jnp.full((B, 2), 3, jnp.int32))
  _, (m,), ro = _run(trainer.StepConfig(sampler=SCFG, positions_per_doc=2, selection="low_logp",
                                        min_prefix=4), batch=batch)
  assert np.isfinite(m["rlp/s_ema_mean"]) and np.isfinite(m["loss"])
  toks = np.asarray(batch["tokens"])
  lp = np.asarray(jax.nn.log_softmax(_model()(batch["tokens"]), -1))
  for b in range(B):
    nxt = {t: lp[b, t - 1, toks[b, t]] for t in range(4, SEQ)}  # log p(x_t | x_<t)
    assert sorted(np.asarray(ro.cuts)[b].tolist()) == sorted(sorted(nxt, key=nxt.get)[:2])
  np.testing.assert_array_equal(np.asarray(ro.targets),
                                np.take_along_axis(toks, np.asarray(ro.cuts), 1))

  class Tok:
    def decode(self, ids):
      return " ".join(str(int(i)) for i in ids)

  t = int(ro.cuts[0, 0])
  text = steplog.sample_text(Tok(), batch, ro)
  assert text.startswith(f"...{Tok().decode(toks[0, :t])!r} <think>"), text
  assert f"-> {str(toks[0, t])!r}" in text


def test_scorer_term_is_the_teacher_forced_s_pred():
  """rlp.scorer_weight adds -mean log p(x_t | x_<t, thought); at theta == theta_old its value is
  exactly -mean S_pred of the rollout (an independent path: the sampler's decode loop), also
  when the gradient is accumulated over micro-batches."""
  for ga in (1, 2):
    _, (m,), ro = _run(trainer.StepConfig(sampler=SCFG, positions_per_doc=2, scorer_weight=0.5,
                                          grad_accum=ga))
    np.testing.assert_allclose(m["rlp/scorer_nll"], -np.asarray(ro.s_pred).mean(), rtol=1e-5)
  # the term has a gradient: the update differs from the paper's (scorer_weight = 0)
  a, _, _ = _run(trainer.StepConfig(sampler=SCFG, positions_per_doc=2, scorer_weight=0.5))
  b, _, _ = _run(trainer.StepConfig(sampler=SCFG, positions_per_doc=2))
  assert any(not np.allclose(x, y) for x, y in zip(jax.tree.leaves(a.params),
                                                  jax.tree.leaves(b.params)))


def _grads(cfg, seed=1):
  model = _model()
  batch = _batch(seed)
  ro = sampler_lib.rollout(model, batch["tokens"], batch["cuts"], jax.random.key(0), cfg.sampler)
  adv = objective_lib.group_advantages(ro.s_pred)
  mb = trainer.UpdateBatch.from_rollout(batch["tokens"], batch["lengths"], batch["cuts"], ro, adv)
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  return jax.grad(lambda p: policy.policy_loss(p, nnx.graphdef(model), mb, cfg, None)[0])(params)


@pytest.mark.parametrize("normalize", ["sequence", "token"])
def test_the_update_normalises_as_configured(normalize):
  """The update's gradient is that of the explicit loss normalised per thought (sequence) or over
  all thought tokens (token), on thoughts of different lengths (some masks cut short here), where
  the two differ."""
  model = _model()
  batch = _batch(1)
  ro = sampler_lib.rollout(model, batch["tokens"], batch["cuts"], jax.random.key(0), SCFG)
  adv = objective_lib.group_advantages(jax.random.normal(jax.random.key(1), ro.s_pred.shape))
  mask = np.asarray(ro.mask).copy()
  mask[0, :, :2, 1:] = 0  # the first document's first two thoughts: one sampled token each
  mb = trainer.UpdateBatch.from_rollout(batch["tokens"], batch["lengths"], batch["cuts"], ro, adv,
                                        jnp.asarray(mask, jnp.float32))
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  cfg = trainer.StepConfig(sampler=SCFG, positions_per_doc=2, normalize=normalize)
  got = jax.grad(lambda p: policy.policy_loss(p, nnx.graphdef(model), mb, cfg, None)[0])(params)

  def explicit(p, how):
    lp = _explicit_thought_logp(p, batch["tokens"], ro.cuts, ro.tokens, SCFG.temperature)
    m = jnp.asarray(mask, jnp.float32)
    term = -jnp.exp(lp - jax.lax.stop_gradient(lp)) * adv[..., None] * m
    if how == "sequence":
      return (term.sum(-1) / m.sum(-1)).mean()
    return term.sum() / m.sum()
  want = jax.grad(explicit)(params, normalize)
  other = jax.grad(explicit)(params, "token" if normalize == "sequence" else "sequence")
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-6, rtol=1e-4)
  assert max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(want),
                                                         jax.tree.leaves(other))) > 1e-5


def test_policy_weight_scales_the_policy_gradient_alone():
  """The loss is policy_weight * PG + scorer_weight * scorer term: the scorer-alone ablation's
  gradient (policy_weight 0) is the recipe's minus the paper's, leaf by leaf."""
  base = dict(sampler=SCFG, positions_per_doc=2)
  both = _grads(trainer.StepConfig(**base, scorer_weight=0.5))
  paper = _grads(trainer.StepConfig(**base))
  alone = _grads(trainer.StepConfig(**base, scorer_weight=0.5, policy_weight=0.0))
  half = _grads(trainer.StepConfig(**base, policy_weight=0.5))
  for a, b, c, h in zip(*(jax.tree.leaves(x) for x in (both, paper, alone, half))):
    np.testing.assert_allclose(np.asarray(c), np.asarray(a) - np.asarray(b), atol=1e-6)
    np.testing.assert_allclose(np.asarray(h), 0.5 * np.asarray(b), atol=1e-7)
  assert max(float(jnp.abs(x).max()) for x in jax.tree.leaves(paper)) > 1e-4
  assert max(float(jnp.abs(x).max()) for x in jax.tree.leaves(alone)) > 1e-4
  nothing = _grads(trainer.StepConfig(**base, policy_weight=0.0))
  assert max(float(jnp.abs(x).max()) for x in jax.tree.leaves(nothing)) == 0.0


def test_shuffled_rewards_keep_the_rewards_and_scramble_the_update():
  """Placebo RL: the same rollout and rewards (the logged reward metrics are the real ones), but
  the advantages come from rewards permuted across the batch, so the update differs; a second
  run with the same seed repeats it exactly."""
  cfg = trainer.StepConfig(sampler=SCFG, positions_per_doc=2)
  real, (m,), ro = _run(cfg)
  shuf, (ms,), ro_s = _run(dataclasses.replace(cfg, shuffle_rewards=True))
  again, _, _ = _run(dataclasses.replace(cfg, shuffle_rewards=True))
  np.testing.assert_array_equal(np.asarray(ro.tokens), np.asarray(ro_s.tokens))
  for k in ("rlp/reward_mean", "rlp/reward_std", "rlp/s_pred_mean"):
    np.testing.assert_allclose(ms[k], m[k], rtol=1e-6)
  assert not np.isclose(ms["rlp/adv_std"], m["rlp/adv_std"], rtol=1e-3)
  assert any(not np.allclose(x, y) for x, y in zip(jax.tree.leaves(real.params),
                                                  jax.tree.leaves(shuf.params)))
  for x, y in zip(jax.tree.leaves(shuf.params), jax.tree.leaves(again.params)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_baseline_without_a_dedicated_opener_token():
  logits = jnp.log(jnp.asarray([[0.2, 0.5, 0.3]]))
  got = objective_lib.token_logp(logits, jnp.asarray([0]), exclude=1)
  np.testing.assert_allclose(float(got[0]), np.log(0.2 / 0.5), rtol=1e-6)
  _, (m,), _ = _run(trainer.StepConfig(sampler=SCFG, positions_per_doc=2, baseline_exclude=29))
  _, (m0,), _ = _run(trainer.StepConfig(sampler=SCFG, positions_per_doc=2))
  assert m["rlp/s_ema_mean"] > m0["rlp/s_ema_mean"]  # mass of token 29 taken out: higher log-prob
  np.testing.assert_allclose(m["grad_norm"], m0["grad_norm"], rtol=1e-5)  # S_ema cancels in A


def test_non_finite_update_is_skipped():
  model = _model()
  tx = trainer.make_optimizer(1e-2)
  state = trainer.init_state(model, tx)
  step = trainer.make_step(nnx.graphdef(model), tx, trainer.StepConfig(objective="cpt"), donate=False)
  x = jnp.zeros((2, 5), jnp.int32)
  bad = dict(inputs=x, targets=x, loss_mask=jnp.full((2, 5), jnp.nan))
  new, m, _ = step(state, bad)
  assert float(m["skipped"]) == 1.0 and int(new.skips) == 1
  for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(state.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  new, m, _ = step(new, dict(bad, loss_mask=jnp.ones((2, 5))))
  assert int(new.skips) == 0


def test_rpt_step_binary_rewards():
  tok_bytes = [bytes([65 + i % 26]) for i in range(32)]
  model = _model()
  tx = trainer.make_optimizer(1e-3)
  state = trainer.init_state(model, tx)
  cfg = trainer.StepConfig(objective="rpt", sampler=sampler_lib.SamplerConfig(
      group_size=4, max_thought_len=3, prompt_ids=(30,), close_ids=(31,), predict=True),
      positions_per_doc=2)
  step = trainer.make_step(nnx.graphdef(model), tx, cfg, tokenizer_bytes=tok_bytes, donate=False)
  _, m, ro = step(state, _batch(0))
  assert np.all(np.asarray(ro.prediction) >= 0)
  r = np.asarray(policy.rpt_rewards(ro.prediction, _batch(0)["tokens"], _batch(0)["cuts"],
                                      jnp.asarray([[b[0]] for b in tok_bytes]),
                                      jnp.ones(32, jnp.int32), 4))
  want = np.asarray([[[tok_bytes[p] == tok_bytes[int(_batch(0)["tokens"][i, int(_batch(0)["cuts"][i, j])])]
                       for p in ro.prediction[i, j]] for j in range(2)] for i in range(B)])
  np.testing.assert_array_equal(r, want.astype(np.float32))
  assert abs(float(m["rlp/reward_mean"]) - r.mean()) < 1e-6


@pytest.mark.parametrize("tie", [True, False])
def test_fused_cpt_loss_equals_logits_path(tie):
  """loss_chunk > 0 (fused head + loss) gives the CPT step of loss_chunk = 0, tied or untied head,
  packed segments included."""
  model = models.Transformer(CFG.replace(tie_embeddings=tie), rngs=nnx.Rngs(0))
  x = jnp.asarray(np.random.default_rng(1).integers(0, 32, (2, 11)), jnp.int32)
  seg = jnp.asarray([[1] * 6 + [2] * 4, [1] * 10], jnp.int32)
  pos = jnp.asarray([list(range(6)) + list(range(4)), list(range(10))], jnp.int32)
  batch = dict(inputs=x[:, :-1], targets=x[:, 1:], loss_mask=(seg > 0).astype(jnp.float32),
               segment_ids=seg, positions=pos)
  tx = trainer.make_optimizer(1e-2)
  out = []
  for chunk in (0, 3):
    step = trainer.make_step(nnx.graphdef(model), tx, trainer.StepConfig(objective="cpt", loss_chunk=chunk),
                             donate=False)
    new, m, _ = step(trainer.init_state(model, tx), batch)
    out.append((m, new.params))
  (m0, p0), (m1, p1) = out
  np.testing.assert_allclose(float(m1["loss"]), float(m0["loss"]), rtol=1e-6)
  np.testing.assert_allclose(float(m1["grad_norm"]), float(m0["grad_norm"]), rtol=1e-5)
  for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p0)):  # Adam moved each by ~1e-2
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-5)


def test_fused_ntp_term_equals_logits_path():
  cfgs = [trainer.StepConfig(sampler=SCFG, positions_per_doc=2, ntp_weight=0.5, loss_chunk=c)
          for c in (0, 5)]
  (_, (m0,), _), (_, (m1,), _) = [_run(c) for c in cfgs]
  assert float(m0["ntp_loss"]) > 0
  np.testing.assert_allclose(m1["ntp_loss"], m0["ntp_loss"], rtol=1e-6)
  np.testing.assert_allclose(m1["loss"], m0["loss"], rtol=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_chunked_thought_head_is_the_same_update(temperature):
  """loss_chunk > 0 applies the head to a few thought positions at a time (recomputed in the
  backward) instead of materialising every thought logit: the same step as loss_chunk = 0 (loss,
  entropy, every metric, the parameters), with the scorer, KL and NTP terms on; the chunk does
  not divide the thought length, so padding is exercised."""
  scfg = dataclasses.replace(SCFG, temperature=temperature)
  base = dict(sampler=scfg, positions_per_doc=2, kl_beta=0.1, scorer_weight=0.5,
              ntp_weight=0.3)
  (s0, (m0,), _), (s3, (m3,), _) = [
      _run(trainer.StepConfig(**base, loss_chunk=c), lr=1e-2) for c in (0, 3)]
  assert set(m0) == set(m3) and float(m0["rlp/entropy"]) > 0
  for k in m0:
    np.testing.assert_allclose(m3[k], m0[k], rtol=2e-5, atol=1e-6, err_msg=k)
  for a, b in zip(jax.tree.leaves(s3.params), jax.tree.leaves(s0.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-4)


def test_one_prefix_forward_serves_rollout_and_update(monkeypatch):
  """The step computes the documents' K/V once (with jax.vjp) for the rollout and the update: the
  same step as two forwards (every metric incl. grad_norm, the parameters), with the scorer, KL
  and NTP terms and a chunked head on; the trace calls prefix_kv once for theta (and once for the
  KL reference) instead of twice."""
  base = dict(sampler=SCFG, positions_per_doc=2, kl_beta=0.1, scorer_weight=0.5, ntp_weight=0.3,
              loss_chunk=3)
  calls = []
  forward = models.Transformer.prefix_kv
  monkeypatch.setattr(models.Transformer, "prefix_kv",
                      lambda self, *a, **kw: calls.append(1) or forward(self, *a, **kw))
  assert trainer._shares_prefix(trainer.StepConfig(**base), B)
  s1, (m1,), _ = _run(trainer.StepConfig(**base), lr=1e-2)
  shared_calls = len(calls)
  calls.clear()
  monkeypatch.setattr(trainer, "_shares_prefix", lambda cfg, n: False)
  s2, (m2,), _ = _run(trainer.StepConfig(**base), lr=1e-2)
  assert (shared_calls, len(calls)) == (2, 3)
  assert set(m1) == set(m2) and float(m1["grad_norm"]) > 0
  for k in m1:
    np.testing.assert_allclose(m1[k], m2[k], rtol=2e-5, atol=1e-6, err_msg=k)
  for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s2.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-4)
  assert not trainer._shares_prefix(trainer.StepConfig(**base, num_updates=2), B)
  assert not trainer._shares_prefix(trainer.StepConfig(**base, grad_accum=2), B)
  assert not trainer._shares_prefix(trainer.StepConfig(**base, rollout_batch=2), B)


def test_ema_logp_at_positions_equals_full_scores():
  """The uniform-selection path scores only the K positions: it equals the full EMA scoring
  (every position's log-prob, as entropy selection computes it) read at those positions."""
  model = _model(3)
  params = trainer.init_state(model, trainer.make_optimizer(1e-3)).params
  b = _batch(1, k=3)
  full, _ = trainer.ema_scores(params, nnx.graphdef(model), b["tokens"], trainer.StepConfig())
  at = trainer.ema_logp_at(params, nnx.graphdef(model), b["tokens"], b["cuts"])
  np.testing.assert_allclose(np.asarray(at),
                             np.asarray(jnp.take_along_axis(full, b["cuts"], 1)), atol=1e-6)
  assert float(jnp.abs(at).min()) > 0


@pytest.mark.parametrize("normalize", ["sequence", "token"])
def test_grad_accum_is_the_same_update(normalize):
  """grad_accum=A splits the documents into A micro-batches and sums their gradients: the same
  step as one batch (loss, every metric, parameters), with the KL and NTP terms on."""
  base = dict(sampler=SCFG, positions_per_doc=2, normalize=normalize, kl_beta=0.1,
              ntp_weight=0.3, loss_chunk=0)
  (s1, (m1,), _), (s4, (m4,), _) = [
      _run(trainer.StepConfig(**base, grad_accum=a), lr=1e-2) for a in (1, 4)]
  assert set(m1) == set(m4)
  for k in m1:
    np.testing.assert_allclose(m4[k], m1[k], rtol=2e-5, atol=1e-6, err_msg=k)
  # (grad_norm above pins the gradient; Adam's first step ~ lr * sign(g) amplifies rounding
  # where g ~ 0, hence the looser parameter tolerance against lr = 1e-2 moves)
  for a, b in zip(jax.tree.leaves(s4.params), jax.tree.leaves(s1.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4)
  with pytest.raises(ValueError, match="grad_accum=3"):
    _run(trainer.StepConfig(**base, grad_accum=3))


def test_truncated_reward_shaping_changes_only_truncated_thoughts():
  # thoughts up to 16 tokens: some close (1/32 per token), some are cut
  base = trainer.StepConfig(sampler=dataclasses.replace(SCFG, max_thought_len=16), positions_per_doc=2)
  _, (keep,), ro = _run(base)
  trunc = np.asarray(ro.truncated)
  assert trunc.any() and not trunc.all()  # both kinds occur in this batch
  got = {}
  for shaping in ("zero", -2.5):
    _, (m,), ro2 = _run(dataclasses.replace(base, truncated_reward=shaping))
    np.testing.assert_array_equal(np.asarray(ro2.truncated), trunc)  # the same rollout
    assert float(m["rlp/s_pred_mean"]) == pytest.approx(float(keep["rlp/s_pred_mean"]), abs=1e-6)
    got[shaping] = float(m["rlp/reward_mean"])
    assert got[shaping] != pytest.approx(float(keep["rlp/reward_mean"]), abs=1e-3)
  # only the truncated thoughts' rewards moved: zero vs -2.5 differ by 2.5 x their share
  assert got["zero"] - got[-2.5] == pytest.approx(2.5 * trunc.mean(), abs=1e-4)


def test_reference_reset_copies_params_and_zeroes_the_optimizer():
  state, _, _ = _run(trainer.StepConfig(sampler=SCFG, kl_beta=0.1), steps=2)
  tx = trainer.make_optimizer(1e-3)
  new = trainer.reset_reference(state, tx)
  for a, b in zip(jax.tree.leaves(new.ref), jax.tree.leaves(state.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert any(float(jnp.abs(a - b).max()) > 0 for a, b in
             zip(jax.tree.leaves(state.ref), jax.tree.leaves(state.params)))  # it was behind
  adam = [s for s in jax.tree.leaves(new.opt_state, is_leaf=lambda x: hasattr(x, "mu"))
          if hasattr(s, "mu")]
  assert adam and all(float(jnp.abs(x).max()) == 0 for s in adam
                      for x in jax.tree.leaves((s.mu, s.nu)))
  assert all(int(s.count) == 0 for s in adam)
  assert int(new.step) == int(state.step)  # step, EMA, rng continue
  for a, b in zip(jax.tree.leaves(new.ema), jax.tree.leaves(state.ema)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert trainer.reset_reference(state.replace(ref=None), tx).ref is None


def test_dynamic_sampling_drops_groups_with_equal_rewards():
  """RPT rewards are binary: a group whose G rewards are all equal has zero advantage. Dropping
  it leaves the summed gradient unchanged and divides it by fewer thoughts (sequence mean)."""
  tok_bytes = [bytes([65 + i % 3]) for i in range(32)]  # 3 letters: rewards 0/1 both occur
  model = _model()
  tx = trainer.make_optimizer(1e-3)
  scfg = sampler_lib.SamplerConfig(group_size=4, max_thought_len=3, prompt_ids=(30,), close_ids=(31,),
                                   predict=True)
  got = {}
  for ds in (False, True):
    cfg = trainer.StepConfig(objective="rpt", sampler=scfg, positions_per_doc=2, dynamic_sampling=ds)
    step = trainer.make_step(nnx.graphdef(model), tx, cfg, tokenizer_bytes=tok_bytes, donate=False)
    _, m, ro = step(trainer.init_state(model, tx), _batch(0))
    got[ds] = (jax.tree.map(np.asarray, m), ro)
  (m0, ro), (m1, _) = got[False], got[True]
  r = np.asarray(policy.rpt_rewards(ro.prediction, _batch(0)["tokens"], _batch(0)["cuts"],
                                      jnp.asarray([[b[0]] for b in tok_bytes]),
                                      jnp.ones(32, jnp.int32), 4))
  uniform = np.all(r == r[..., :1], axis=-1)
  assert 0 < uniform.mean() < 1, uniform  # both kinds of groups in this batch
  assert float(m1["rlp/dropped_group_frac"]) == pytest.approx(uniform.mean())
  assert float(m1["thought_tokens"]) == float(m0["thought_tokens"])
  has = np.asarray(ro.mask).sum(-1) > 0
  ratio = has.sum() / has[~uniform].sum()
  assert float(m1["grad_norm"]) == pytest.approx(float(m0["grad_norm"]) * ratio, rel=1e-4)


def test_reward_over_several_tokens_is_the_explicit_sum():
  """rlp.reward_tokens = 2 (a departure from the paper): a thought's reward is, by plain causal
  forwards of its own sequence x_<t + prompt + thought (closer included) + x_t,
  log p(x_t | ..) + log p(x_{t+1} | .., x_t) minus the EMA's log p(x_t | x_<t) +
  log p(x_{t+1} | x_<t+1); an x_{t+1} past the document's end adds nothing. With one token and
  no baseline it is the rollout's own S_pred."""
  model, ema = _model(0), _model(1)
  batch = _batch(3)
  cuts = np.asarray(batch["cuts"]).copy()
  cuts[0, 0] = SEQ - 1  # x_{t+1} is past the end of document 0
  lengths = np.full((B,), SEQ, np.int32)
  tokens, cuts = batch["tokens"], jnp.asarray(cuts)
  ro = sampler_lib.rollout(model, tokens, cuts, jax.random.key(0), SCFG)
  cfg = trainer.StepConfig(sampler=SCFG, positions_per_doc=2, reward_tokens=2)
  # the step's baseline at t and t + 1, from the EMA head at those positions and from every
  # position's scores (the two ways _positions_and_baseline computes it)
  state = trainer.init_state(ema, trainer.make_optimizer(1e-3))
  docs = dict(batch, cuts=cuts, lengths=jnp.asarray(lengths))
  _, s_ema = trainer._positions_and_baseline(state, batches.DocBatch.of(docs), nnx.graphdef(ema),
                                             dataclasses.replace(cfg, ema_head_at_positions=True))
  _, s_all = trainer._positions_and_baseline(state, batches.DocBatch.of(docs), nnx.graphdef(ema),
                                             dataclasses.replace(cfg, ema_head_at_positions=False))
  np.testing.assert_allclose(np.asarray(s_ema), np.asarray(s_all), atol=1e-4)
  got = np.asarray(policy.continuation_gain(model, tokens, jnp.asarray(lengths), cuts, ro, cfg,
                                            s_ema))
  one = policy.continuation_gain(model, tokens, jnp.asarray(lengths), cuts, ro,
                                 dataclasses.replace(cfg, reward_tokens=1))
  np.testing.assert_allclose(np.asarray(one), np.asarray(ro.s_pred), atol=1e-4)
  toks = np.asarray(tokens)
  ema_lp = np.asarray(jax.nn.log_softmax(ema(tokens), -1))
  n_valid = np.asarray(ro.valid).sum(-1)
  for b in range(B):
    for k in range(2):
      t = int(cuts[b, k])
      for g in range(SCFG.group_size):
        thought = np.asarray(ro.tokens)[b, k, g, :n_valid[b, k, g]]
        seq = np.concatenate([toks[b, :t], SCFG.prompt_ids, thought, toks[b, t:t + 1]])
        lp = np.asarray(jax.nn.log_softmax(model(jnp.asarray(seq[None], jnp.int32)), -1))[0]
        want = lp[-2, toks[b, t]] - ema_lp[b, t - 1, toks[b, t]]
        if t + 1 < lengths[b]:
          want += lp[-1, toks[b, t + 1]] - ema_lp[b, t, toks[b, t + 1]]
        assert abs(got[b, k, g] - want) < 1e-4, (b, k, g, got[b, k, g], want)
  _, (m,), _ = _run(cfg)
  assert np.isfinite(m["loss"]) and np.isfinite(m["rlp/reward_mean"])
