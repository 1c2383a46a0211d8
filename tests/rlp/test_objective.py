"""The objective's pure functions against hand-computed values (the paper's eq. 3-8)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlp import objective


def test_information_gain_is_a_constant():
  g = jax.grad(lambda s: objective.information_gain(s, jnp.asarray(1.0)))(jnp.asarray(3.0))
  assert float(objective.information_gain(jnp.asarray(-1.0), jnp.asarray(-3.0))) == 2.0
  assert float(g) == 0.0


def test_group_advantages_leave_one_out():
  r = jnp.asarray([[1.0, 2.0, 3.0, 6.0]])
  a = objective.group_advantages(r)
  # A_i = G/(G-1) (r_i - mean) = r_i - mean_{j != i} r_j
  loo = np.asarray([1 - 11 / 3, 2 - 10 / 3, 3 - 9 / 3, 6 - 6 / 3])
  np.testing.assert_allclose(np.asarray(a)[0], loo, rtol=1e-6)
  std = objective.group_advantages(r, "std")
  np.testing.assert_allclose(np.asarray(std)[0], (r[0] - 3.0) / (np.std([1, 2, 3, 6]) + 1e-6),
                             rtol=1e-5)
  with pytest.raises(ValueError, match=">= 2"):
    objective.group_advantages(jnp.ones((3, 1)))


def test_surrogate_hand_values_sequence_and_token():
  logp = jnp.log(jnp.asarray([[0.5, 0.25, 0.1], [0.2, 0.4, 0.3]]))
  old = jnp.log(jnp.asarray([[0.5, 0.5, 0.1], [0.1, 0.4, 0.3]]))
  mask = jnp.asarray([[1, 1, 0], [1, 1, 1]])
  adv = jnp.asarray([1.0, -2.0])
  # ratios: [1, .5, (masked)], [2, 1, 1]; eps 0.2
  # thought 0 (A=1): min(r A, clip(r) A) -> [1, 0.5]; thought 1 (A=-2): [min(-4,-2.4)=-4, -2, -2]
  per_tok = np.asarray([[-1.0, -0.5, 0.0], [4.0, 2.0, 2.0]])  # -min(...), masked entry 0
  m_ = np.asarray(mask, np.float64)
  seq = np.mean((per_tok * m_).sum(1) / m_.sum(1))  # each thought's mean, then over thoughts
  tok = (per_tok * m_).sum() / m_.sum()  # over all its tokens
  got_seq, m = objective.clipped_surrogate_loss(logp, old, adv, mask, 0.2, 0.2, "sequence", True)
  got_tok = objective.clipped_surrogate_loss(logp, old, adv, mask, 0.2, 0.2, "token")
  assert abs(float(got_seq) - seq) < 1e-6 and abs(float(got_tok) - tok) < 1e-6
  assert abs(seq - tok) > 0.1  # the two normalisations are told apart by these values
  # clipped tokens: none with A>0 above 1.2; A<0 with ratio < 0.8: none -> 0 of 5
  assert float(m["clip_frac"]) == 0.0
  assert abs(float(m["ratio_max"]) - 2.0) < 1e-6


def _grad_wrt_logp(ratio, adv, eps_low=0.2, eps_high=0.3):
  logp = jnp.log(jnp.asarray([[ratio]]))
  f = lambda lp: objective.clipped_surrogate_loss(lp, jnp.zeros((1, 1)), jnp.asarray([adv]),
                                                  jnp.ones((1, 1)), eps_low, eps_high)
  return float(jax.grad(f)(logp)[0, 0])


def test_clip_edges_have_zero_gradient():
  assert _grad_wrt_logp(1.5, 1.0) == 0.0  # A > 0, rho > 1 + eps_high
  assert _grad_wrt_logp(0.5, -1.0) == 0.0  # A < 0, rho < 1 - eps_low
  assert _grad_wrt_logp(1.25, 1.0) != 0.0  # inside clip-higher range (eps_high 0.3)
  assert _grad_wrt_logp(1.5, -1.0) != 0.0  # A < 0 is not clipped above
  assert _grad_wrt_logp(0.5, 1.0) != 0.0  # A > 0 is not clipped below


def test_masked_tokens_and_empty_thoughts_do_not_count():
  logp = jnp.asarray([[-1.0, 5.0], [3.0, 3.0]])
  mask = jnp.asarray([[1, 0], [0, 0]])
  f = lambda lp: objective.clipped_surrogate_loss(lp, lp * 0 - 1.0, jnp.asarray([2.0, 7.0]), mask)
  g = jax.grad(f)(logp)
  assert float(f(logp)) == -2.0
  np.testing.assert_array_equal(np.asarray(g)[0, 1:], 0.0)
  np.testing.assert_array_equal(np.asarray(g)[1], 0.0)


def test_kl_k3_and_ntp():
  lp, ref = jnp.asarray([[-1.0, -2.0]]), jnp.asarray([[-1.5, -2.0]])
  d = -0.5
  assert abs(float(objective.kl_k3(lp, ref, jnp.asarray([[1, 0]]))) - (np.exp(d) - d - 1)) < 1e-6
  logits = jnp.log(jnp.asarray([[[0.25, 0.75], [0.5, 0.5]]]))
  nll = objective.next_token_loss(logits, jnp.asarray([[1, 0]]), jnp.asarray([[1, 1]]))
  assert abs(float(nll) - (-(np.log(0.75) + np.log(0.5)) / 2)) < 1e-6


def test_rpt_reward_prefix_at_token_boundary():
  cont = jnp.asarray([[ord(c) for c in " the cat"]])
  boundary = jnp.asarray([[j in (3, 7) for j in range(8)]])  # tokens " the", " cat"
  def reward(s):
    b = jnp.asarray([[ord(c) for c in s] + [-1] * (8 - len(s))])
    return float(objective.rpt_reward(b, jnp.asarray([len(s)]), cont, boundary)[0])
  assert reward(" the") == 1.0
  assert reward(" the cat") == 1.0
  assert reward(" th") == 0.0  # prefix, but not at a token boundary
  assert reward(" dog") == 0.0


@pytest.mark.parametrize("chunk", [1, 5, 16, 64])
def test_linear_cross_entropy_equals_materialised_logits(chunk):
  """Fused head + loss == logits then next_token_loss, value and both gradients, for chunks that
  do and do not divide the sequence, under an outer scale (the cotangent is not 1)."""
  k = jax.random.split(jax.random.key(chunk), 4)
  x = jax.random.normal(k[0], (3, 16, 8))
  w = jax.random.normal(k[1], (40, 8))
  t = jax.random.randint(k[2], (3, 16), 0, 40)
  m = (jax.random.uniform(k[3], (3, 16)) > 0.3).astype(jnp.float32)
  ref = lambda x, w: 2.5 * objective.next_token_loss(jnp.einsum("bsd,vd->bsv", x, w), t, m)
  fused = lambda x, w: 2.5 * objective.linear_cross_entropy(x, w, t, m, chunk)
  (a, ga), (b, gb) = [jax.value_and_grad(f, (0, 1))(x, w) for f in (fused, ref)]
  np.testing.assert_allclose(float(a), float(b), rtol=1e-6)
  for u, v in zip(ga, gb):
    np.testing.assert_allclose(np.asarray(u), np.asarray(v), atol=1e-6)
  np.testing.assert_allclose(float(jax.jit(fused)(x, w)), float(b), rtol=1e-6)  # primal only


def test_linear_cross_entropy_masked_rows_do_not_count():
  x = jax.random.normal(jax.random.key(0), (1, 4, 8))
  w = jax.random.normal(jax.random.key(1), (10, 8))
  t = jnp.asarray([[1, 2, 3, 4]])
  m = jnp.asarray([[1.0, 1.0, 0.0, 0.0]])
  x2 = x.at[:, 2:].set(1e3)  # garbage under the mask changes nothing, and gets no gradient
  a = objective.linear_cross_entropy(x, w, t, m, 3)
  b = objective.linear_cross_entropy(x2, w, t, m, 3)
  np.testing.assert_allclose(float(a), float(b), rtol=1e-6)
  g = jax.grad(lambda x: objective.linear_cross_entropy(x, w, t, m, 3))(x2)
  assert float(jnp.abs(g[:, 2:]).max()) == 0.0 and float(jnp.abs(g[:, :2]).max()) > 0


def test_kl_estimators_hand_values_and_gradients():
  lp, ref = jnp.asarray([[-1.0, -2.0, -0.5]]), jnp.asarray([[-1.5, -1.0, -9.0]])
  mask = jnp.asarray([[1, 1, 0]])
  d = np.array([0.5, -1.0])  # log pi - log ref on the masked tokens
  assert float(objective.kl_estimate(lp, ref, mask, "k1")) == pytest.approx(d.mean(), abs=1e-6)
  assert float(objective.kl_estimate(lp, ref, mask, "k2")) == pytest.approx((d ** 2 / 2).mean(), abs=1e-6)
  assert float(objective.kl_estimate(lp, ref, mask, "k3")) == pytest.approx(
      (np.exp(-d) - 1 + d).mean(), abs=1e-6)
  # k2's gradient in log pi is d (per token, / tokens); the unmasked token gets none
  g = jax.grad(lambda x: objective.kl_estimate(x, ref, mask, "k2"))(lp)
  np.testing.assert_allclose(np.asarray(g)[0], [0.25, -0.5, 0.0], atol=1e-6)
  with pytest.raises(ValueError, match="k1 \\| k2 \\| k3"):
    objective.kl_estimate(lp, ref, mask, "k4")
