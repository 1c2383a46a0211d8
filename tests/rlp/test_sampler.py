"""The shared-prefix rollout against explicit teacher-forced sequences and the naive sampler."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import models
from models import sampling
from rlp import sampler

CFG = models.ModelConfig(vocab_size=48, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                         head_dim=8, d_ff=48)
OPEN, CLOSE = (40, 41), (42, 43)  # multi-token markers exercise the general path


@pytest.fixture(scope="module")
def model():
  return models.Transformer(CFG, rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def docs():
  rng = np.random.default_rng(0)
  d = jnp.asarray(rng.integers(0, 40, (2, 12)), jnp.int32)
  cuts = jnp.asarray([[3, 8], [5, 11]], jnp.int32)
  return d, cuts


def scfg(**kw):
  base = dict(group_size=3, max_thought_len=6, min_thought_len=1, temperature=1.0,
              prompt_ids=(39,) + OPEN, close_ids=CLOSE)
  base.update(kw)
  return sampler.SamplerConfig(**base)


def _check_against_full_forward(model, docs, cuts, ro, cfg):
  temp = cfg.temperature or 1.0
  b, k, g, _ = ro.tokens.shape
  for i in range(b):
    for j in range(k):
      t = int(cuts[i, j])
      for h in range(g):
        n_valid = int(ro.valid[i, j, h].sum())
        thought = np.asarray(ro.tokens[i, j, h, :n_valid])
        seq = np.concatenate([np.asarray(docs[i, :t]), cfg.prompt_ids, thought,
                              [int(docs[i, t])]])
        logits = np.asarray(model(jnp.asarray(seq[None], jnp.int32))[0])
        start = t + len(cfg.prompt_ids)
        lp = jax.nn.log_softmax(logits[start - 1:start - 1 + n_valid] / temp, -1)
        want = np.take_along_axis(np.asarray(lp), thought[:, None], -1)[:, 0]
        m = np.asarray(ro.mask[i, j, h, :n_valid]).astype(bool)
        np.testing.assert_allclose(np.asarray(ro.logp[i, j, h, :n_valid])[m], want[m], atol=1e-4)
        # the thought ends with </think>; its length is what comes before the closer
        assert tuple(thought[-len(CLOSE):]) == CLOSE
        assert int(ro.lengths[i, j, h]) == n_valid - len(CLOSE)
        assert m.sum() == n_valid - len(CLOSE) * bool(ro.truncated[i, j, h])
        s_pred = jax.nn.log_softmax(logits[-2])[int(docs[i, t])]
        np.testing.assert_allclose(float(ro.s_pred[i, j, h]), float(s_pred), atol=1e-4)


def test_logp_and_s_pred_equal_teacher_forced_forward(model, docs):
  d, cuts = docs
  cfg = scfg()
  ro = sampler.rollout(model, d, cuts, jax.random.key(0), cfg)
  assert ro.tokens.shape == (2, 2, 3, cfg.buffer_len)
  _check_against_full_forward(model, d, cuts, ro, cfg)
  np.testing.assert_array_equal(np.asarray(ro.targets), np.take_along_axis(np.asarray(d), np.asarray(cuts), 1))


def test_logp_at_temperature_0p7_with_top_k_top_p(model, docs):
  """Log-probs are the tempered policy's (unfiltered), checked against explicit full forwards;
  every sampled token lies inside that step's top-k set."""
  d, cuts = docs
  cfg = scfg(temperature=0.7, top_k=5, top_p=0.9)
  ro = sampler.rollout(model, d, cuts, jax.random.key(3), cfg)
  _check_against_full_forward(model, d, cuts, ro, cfg)
  for i, j, h in [(0, 0, 0), (1, 1, 2)]:
    t = int(cuts[i, j])
    n = int(np.asarray(ro.mask[i, j, h]).sum())
    toks = np.asarray(ro.tokens[i, j, h, :n])
    seq = np.concatenate([np.asarray(d[i, :t]), cfg.prompt_ids, toks])
    logits = np.asarray(model(jnp.asarray(seq[None], jnp.int32))[0])
    start = t + len(cfg.prompt_ids) - 1
    for step, tok in enumerate(toks):
      top5 = np.argsort(logits[start + step])[::-1][:5]
      assert tok in top5


def test_truncation_appends_close_and_is_flagged(model, docs):
  d, cuts = docs
  # a close sequence the model cannot produce quickly: every thought hits the limit
  cfg = scfg(max_thought_len=3, temperature=0.0)
  ro = sampler.rollout(model, d, cuts, jax.random.key(1), cfg)
  lengths, trunc = np.asarray(ro.lengths), np.asarray(ro.truncated)
  valid, mask = np.asarray(ro.valid).sum(-1), np.asarray(ro.mask).sum(-1)
  assert trunc.any()  # the case under test happens
  # truncated: 3 sampled tokens, the closer appended (valid, not policy actions)
  assert np.all(lengths[trunc] == 3) and np.all(mask[trunc] == 3)
  assert np.all(valid[trunc] == 3 + len(CLOSE))
  # any natural stop: the closer was sampled (mask covers it) and is not in the length
  assert np.all(mask[~trunc] == lengths[~trunc] + len(CLOSE))
  _check_against_full_forward(model, d, cuts, ro, cfg)


def test_naive_prefix_copy_gives_identical_outputs(model, docs):
  d, cuts = docs
  a = sampler.rollout(model, d, cuts, jax.random.key(3), scfg())
  b = sampler.rollout(model, d, cuts, jax.random.key(3), scfg(naive=True))
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-5)


def test_scanned_and_unrolled_decode_layers_give_identical_outputs(model, docs):
  """The decode loop over caches and weights stacked over the layers (a layer scan) samples what
  the loop unrolled over per-layer arrays does, across read spans (attend_block=2)."""
  d, cuts = docs
  kw = dict(max_thought_len=8, attend_block=2)
  a = sampler.rollout(model, d, cuts, jax.random.key(5), scfg(unroll_layers=False, **kw))
  b = sampler.rollout(model, d, cuts, jax.random.key(5), scfg(unroll_layers=True, **kw))
  np.testing.assert_array_equal(np.asarray(a.tokens), np.asarray(b.tokens))
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-5)
  _check_against_full_forward(model, d, cuts, a, scfg(**kw))
  with pytest.raises(ValueError, match="unroll_layers"):
    scfg(unroll_layers="yes")


def test_reading_the_filled_cache_in_spans_changes_nothing(model, docs):
  """Decode loops that read only the filled part of the thought cache (spans 2, 4, 8, then the
  whole 17-token cache) sample the same thoughts with the same log-probs as one loop reading the
  whole cache, and both match explicit full forwards."""
  d, cuts = docs
  spanned = scfg(max_thought_len=12, min_thought_len=10, attend_block=2)
  assert spanned.read_spans() == (2, 4, 8, 17)
  assert scfg(max_thought_len=12, attend_block=0).read_spans() == (17,)
  a = sampler.rollout(model, d, cuts, jax.random.key(7), spanned)
  b = sampler.rollout(model, d, cuts, jax.random.key(7), scfg(max_thought_len=12, min_thought_len=10,
                                                              attend_block=0))
  assert int(np.asarray(a.valid).sum(-1).max()) > 8  # the thoughts reach the last span
  np.testing.assert_array_equal(np.asarray(a.tokens), np.asarray(b.tokens))
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-5)
  _check_against_full_forward(model, d, cuts, a, spanned)
  with pytest.raises(ValueError, match="attend_block"):
    scfg(attend_block=-1)


@pytest.mark.parametrize("unroll", [False, True])
def test_rollout_state_is_split_over_the_documents_under_a_mesh(model, docs, unroll):
  """Under a (data, fsdp, tensor) mesh the rollout keeps its caches and stream state on the
  documents' devices: replicated inputs give document-sharded outputs, equal to the rollout
  without a mesh (caches stacked over the layers, or one per layer)."""
  d, cuts = docs
  cfg = scfg(unroll_layers=unroll)
  from rlp import sharding
  want = sampler.rollout(model, d, cuts, jax.random.key(3), cfg)
  with jax.set_mesh(sharding.make_mesh((2, 1, 1), jax.devices()[:2])):  # the trainer's mesh
    got = sampler.rollout(model, d, cuts, jax.random.key(3), cfg)
  for x in (got.tokens, got.s_pred, got.lengths):  # one of the 2 documents per device
    assert x.sharding.shard_shape(x.shape)[0] == 1, x.sharding
  for x, y in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-5)


def test_greedy_equals_model_greedy_continuation(model, docs):
  d, cuts = docs
  cfg = scfg(temperature=0.0, max_thought_len=5, close_ids=(47,), group_size=2)
  ro = sampler.rollout(model, d, cuts, jax.random.key(4), cfg)
  toks = np.asarray(ro.tokens)
  for i in range(2):
    for j in range(2):
      t = int(cuts[i, j])
      prompt = jnp.concatenate([d[i, :t], jnp.asarray(cfg.prompt_ids)])[None]
      cont = np.asarray(models.greedy_generate(model, prompt, 5))[0]
      n = int(ro.lengths[i, j, 0])
      assert toks[i, j, 0, :n].tolist() == cont[:n].tolist()
      assert toks[i, j, 1, :n].tolist() == cont[:n].tolist()  # greedy: all G thoughts agree


def test_deterministic_given_key(model, docs):
  d, cuts = docs
  a = sampler.rollout(model, d, cuts, jax.random.key(5), scfg())
  b = sampler.rollout(model, d, cuts, jax.random.key(5), scfg())
  c = sampler.rollout(model, d, cuts, jax.random.key(6), scfg())
  np.testing.assert_array_equal(np.asarray(a.tokens), np.asarray(b.tokens))
  assert not np.array_equal(np.asarray(a.tokens), np.asarray(c.tokens))


def test_thought_logits_match_rollout_logp(model, docs):
  d, cuts = docs
  cfg = scfg()
  ro = sampler.rollout(model, d, cuts, jax.random.key(7), cfg)
  logits = sampler.thought_logits(model, d, cuts, ro.tokens, cfg)
  lp = jax.nn.log_softmax(logits / cfg.temperature, -1)
  got = jnp.take_along_axis(lp, ro.tokens[..., None], -1)[..., 0] * ro.mask
  np.testing.assert_allclose(np.asarray(got), np.asarray(ro.logp), atol=1e-4)


def test_top_k_top_p_restrict_support():
  logits = jnp.log(jnp.asarray([[0.5, 0.3, 0.15, 0.05]]))
  keys = jax.random.split(jax.random.key(0), 400)
  tk = jax.vmap(lambda k: sampling.sample_logits(k, logits, 1.0, top_k=2)[0])(keys)
  assert set(np.asarray(tk).ravel().tolist()) == {0, 1}
  tp = jax.vmap(lambda k: sampling.sample_logits(k, logits, 1.0, top_p=0.9)[0])(keys)
  assert set(np.asarray(tp).ravel().tolist()) == {0, 1, 2}
  # top-p after top-k renormalises: top-2 leaves [.625, .375], so top-p 0.6 keeps one token
  both = jax.vmap(lambda k: sampling.sample_logits(k, logits, 1.0, top_k=2, top_p=0.6)[0])(keys)
  assert set(np.asarray(both).ravel().tolist()) == {0}
  # ... and after a ban: the banned top token's mass does not count toward the nucleus
  ban = jnp.asarray([[True, False, False, False]])
  bp = jax.vmap(lambda k: sampling.sample_logits(k, logits, 1.0, top_p=0.5, ban=ban)[0])(keys)
  assert set(np.asarray(bp).ravel().tolist()) == {1}  # .3/.5 = .6 >= 0.5 alone
  with pytest.raises(ValueError, match="min_thought_len"):
    sampler.SamplerConfig(min_thought_len=0)


def test_sampling_equals_jax_random_categorical_and_argmax():
  """sample_logits draws exactly jax.random.categorical's token (the same Gumbel noise, a faster
  argmax), so thoughts and regression pins do not depend on which argmax is used; the argmax
  keeps the first index of ties and handles -inf rows."""
  logits = jax.random.normal(jax.random.key(1), (3, 5, 257)) * 3
  ban = jnp.zeros((3, 5, 257), bool).at[:, :2, 7].set(True)
  for i in range(20):
    key = jax.random.fold_in(jax.random.key(2), i)
    tok, logp = sampling.sample_logits(key, logits, 1.0, ban=ban)
    ref = jax.random.categorical(key, jnp.where(ban, -jnp.inf, jax.nn.log_softmax(logits)), -1)
    np.testing.assert_array_equal(tok, ref)
    np.testing.assert_allclose(logp, jnp.take_along_axis(jax.nn.log_softmax(logits), tok[..., None],
                                                         -1)[..., 0], rtol=1e-6)
  x = jnp.asarray([[0.0, 2.0, 2.0, 1.0], [-jnp.inf] * 4, [3.0, -jnp.inf, 3.0, 0.0]])
  np.testing.assert_array_equal(sampling.last_axis_argmax(x), jnp.argmax(x, -1))
  np.testing.assert_array_equal(sampling.last_axis_argmax(logits), jnp.argmax(logits, -1))


class _Scripted:
  """A stand-in model whose next-token distribution is an explicit table of the last token fed:
  logits 10 at first[tok], 5 at second[tok], 0 elsewhere. Greedy rollouts then follow a script."""

  def __init__(self, first, second, vocab=16):
    self.config = CFG
    self.first, self.second, self.vocab = jnp.asarray(first), jnp.asarray(second), vocab

  def prefix_kv(self, docs):
    shape = (CFG.n_layers,) + docs.shape + (CFG.n_kv_heads, CFG.head_dim)
    return jnp.zeros(shape), jnp.zeros(shape)

  def layer_weights(self):
    return None

  def decode_shared(self, tok, pos, prefix, pmask, tkv, write_index, filled=None, weights=None):
    v = jnp.arange(self.vocab)
    logits = (10.0 * (v == self.first[tok][..., None]) + 5.0 * (v == self.second[tok][..., None]))
    return logits, tkv


# token ids of the script: P = <think>, A = a thought word, X/W = ' </' and '</', Y = 'think',
# Z = '>', D = the document's tokens
P, A, X, W, Y, Z, D = 1, 2, 3, 4, 5, 6, 7


def _scripted_rollout(first, second, **kw):
  docs = jnp.full((1, 6), D, jnp.int32)
  cfg = sampler.SamplerConfig(**{**dict(group_size=2, max_thought_len=6, temperature=0.0,
                                        prompt_ids=(P,), close_ids=(W, Y, Z)), **kw})
  model = _Scripted(first, second)
  return sampler.rollout_fn(model, docs, jnp.asarray([[3]], jnp.int32), jax.random.key(0), cfg)


def _table(**edges):
  t = np.full(16, A)
  for k, v in edges.items():
    t[globals()[k]] = globals()[v] if isinstance(v, str) else v
  return t.tolist()


def test_every_closer_tokenization_ends_a_thought():
  # P -> A -> X -> Y -> Z: the model writes the spaced closer ' </' 'think' '>'
  first = _table(P="A", A="X", X="Y", Y="Z", Z="D")
  ro = _scripted_rollout(first, first, close_alts=((X, Y, Z),))
  assert np.asarray(ro.tokens)[0, 0, 0, :4].tolist() == [A, X, Y, Z]
  assert np.asarray(ro.lengths).ravel().tolist() == [1, 1]  # one thought token, then ' </think>'
  assert np.asarray(ro.mask).sum(-1).ravel().tolist() == [4, 4]  # the closer was sampled
  assert not np.asarray(ro.truncated).any()
  # without the alternative the same thought never closes: truncated, canonical closer appended
  ro = _scripted_rollout(first, first)
  assert np.asarray(ro.truncated).all()
  assert np.asarray(ro.tokens)[0, 0, 0, 6:9].tolist() == [W, Y, Z]
  assert np.asarray(ro.valid)[0, 0, 0].sum() == 9
  assert np.asarray(ro.lengths).ravel().tolist() == [6, 6]  # the appended closer is not counted
  assert np.asarray(ro.mask).sum(-1).ravel().tolist() == [6, 6]


def test_natural_stop_on_the_canonical_closer():
  first = _table(P="A", A="W", W="Y", Y="Z", Z="D")
  ro = _scripted_rollout(first, first, close_alts=((X, Y, Z),))
  assert np.asarray(ro.tokens)[0, 0, 0, :4].tolist() == [A, W, Y, Z]
  assert np.asarray(ro.lengths).ravel().tolist() == [1, 1]
  assert not np.asarray(ro.truncated).any()


def test_min_length_bans_the_first_token_of_every_closer():
  # P -> W at once (the second choice is A); A -> X (second choice A); with min length 3 both
  # closer starts are banned for the first 3 tokens, so the thought is A A A then a closer
  first = _table(P="W", A="X", W="Y", X="Y", Y="Z", Z="D")
  second = _table(P="A", A="A")
  ro = _scripted_rollout(first, second, close_alts=((X, Y, Z),), min_thought_len=3)
  toks = np.asarray(ro.tokens)[0, 0, 0]
  assert toks[:6].tolist() == [A, A, A, X, Y, Z]
  assert int(np.asarray(ro.lengths)[0, 0, 0]) == 3
  # min length 1 (a thought has a token) still bans a closer as the very first token
  ro = _scripted_rollout(first, second, close_alts=((X, Y, Z),), min_thought_len=1)
  assert np.asarray(ro.tokens)[0, 0, 0, :4].tolist() == [A, X, Y, Z]


def test_chunked_rollout_samples_chunks_in_turn(model):
  """rlp.rollout_batch: chunk j holds documents j, j + n, ... and samples with fold_in(key, j);
  greedy equals the unchunked rollout exactly; a batch sharded over devices gives the same
  result; a chunk that does not divide the batch is refused."""
  rng = np.random.default_rng(1)
  d = jnp.asarray(rng.integers(0, 40, (8, 12)), jnp.int32)
  cuts = jnp.asarray(np.sort(rng.integers(3, 11, (8, 2)), 1), jnp.int32)
  graphdef, params = nnx.split(model)
  run = jax.jit(lambda p, d, c, key, cfg, chunk: sampler.chunked_rollout_fn(
      nnx.merge(graphdef, p), d, c, key, cfg, chunk), static_argnums=(4, 5))
  key = jax.random.key(7)
  greedy = scfg(temperature=0.0)

  def same(a, b, rows=slice(None)):  # tokens and flags exactly; log-probs up to float rounding
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      x, y = np.asarray(x)[rows], np.asarray(y)
      if np.issubdtype(x.dtype, np.floating):
        np.testing.assert_allclose(x, y, atol=1e-5)
      else:
        np.testing.assert_array_equal(x, y)
  same(run(params, d, cuts, key, greedy, 2), run(params, d, cuts, key, greedy, 0))
  cfg = scfg()
  ro = run(params, d, cuts, key, cfg, 2)  # 4 chunks of 2: chunk j = documents j and j + 4
  for j in range(4):
    rows = np.asarray([j, j + 4])
    same(ro, sampler.rollout(model, d[rows], cuts[rows], jax.random.fold_in(key, j), cfg), rows)
  _check_against_full_forward(model, d, cuts, ro, cfg)
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:4]), ("data",))
  shard = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  same(run(params, jax.device_put(d, shard), jax.device_put(cuts, shard), key, cfg, 4),
       run(params, d, cuts, key, cfg, 4))
  with pytest.raises(ValueError, match="rollout chunk 3 does not divide the 8 documents"):
    run(params, d, cuts, key, cfg, 3)
