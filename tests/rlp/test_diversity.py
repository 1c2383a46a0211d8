"""G-Vendi: the score against independent computations, its bounds and invariances, the
never-materialised projection, and diverse-subset selection."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import models
from rlp import diversity


def _independent_vendi(z):
  """Through the SVD of the unit rows: eigenvalues of (1/n) U^T U are s^2 / n."""
  u = z / np.linalg.norm(z, axis=1, keepdims=True)
  s = np.linalg.svd(u, compute_uv=False) ** 2 / len(u)
  s = s[s > 1e-12]
  return float(np.exp(-(s * np.log(s)).sum()))


@pytest.mark.parametrize("n,d", [(5, 16), (40, 8), (12, 12)])
def test_score_equals_independent_and_kernel_forms_within_bounds(n, d):
  z = np.random.default_rng(n * d).normal(size=(n, d))
  got = diversity.g_vendi(z)
  assert got == pytest.approx(_independent_vendi(z), rel=1e-9)
  assert got == pytest.approx(diversity.g_vendi_kernel(z), rel=1e-9)  # the n x n cosine-kernel form
  assert 1.0 <= got <= min(n, d) + 1e-9
  # scaling a row changes nothing (rows are normalised); orthogonal rows reach the maximum
  z2 = z.copy()
  z2[0] *= 7.0
  assert diversity.g_vendi(z2) == pytest.approx(got, rel=1e-9)
  assert diversity.g_vendi(np.eye(d)[:min(n, d)]) == pytest.approx(min(n, d), rel=1e-9)


def test_projection_is_the_dense_rademacher_matrix_and_keeps_dot_products():
  rng = np.random.default_rng(0)
  grads = {"a": jnp.asarray(rng.normal(size=(2, 3, 5)), jnp.float32),
           "b": jnp.asarray(rng.normal(size=(2, 37)), jnp.float32)}
  proj = diversity.Projection(dim=64, seed=3, chunk=8)
  z = np.asarray(proj.apply(grads))
  # the same R built densely from the same per-leaf, per-chunk keys
  base = jax.random.key(3)
  blocks = []
  for li, leaf in enumerate(jax.tree_util.tree_leaves(grads)):
    p = int(np.prod(leaf.shape[1:]))
    n_chunks = -(-p // 8)
    r = np.concatenate([np.asarray(diversity.rademacher(jax.random.fold_in(jax.random.fold_in(base, li),
                                                                           i), 8, 64))
                        for i in range(n_chunks)])[:p]
    blocks.append(r)
  dense = np.concatenate(blocks)  # [P, d], +-1 entries
  assert set(np.unique(dense)) == {-1.0, 1.0}
  g = np.concatenate([np.asarray(l).reshape(2, -1) for l in jax.tree_util.tree_leaves(grads)], 1)
  np.testing.assert_allclose(z, g @ dense / 8.0, rtol=1e-5, atol=1e-5)
  # Johnson-Lindenstrauss: dot products of 20 random 20k-dim vectors survive d = 1024
  x = rng.normal(size=(20, 20000)).astype(np.float32)
  zx = np.asarray(diversity.Projection(dim=1024, seed=0).apply({"w": jnp.asarray(x)}))
  ux = x / np.linalg.norm(x, axis=1, keepdims=True)
  uz = zx / np.linalg.norm(zx, axis=1, keepdims=True)
  assert np.abs(ux @ ux.T - uz @ uz.T).max() < 4 / np.sqrt(1024)
  assert np.allclose(np.linalg.norm(zx, axis=1) / np.linalg.norm(x, axis=1), 1, atol=0.15)


def test_sketch_is_a_count_sketch_that_keeps_dot_products():
  """Each parameter lands in exactly one coordinate with a +-1 sign; entries of one layout row
  never share a coordinate; dot products of 20 random 20k-dim vectors survive d = 1024 as well
  as the dense map's (the same bound as above); the estimate is unbiased over seeds."""
  shapes = [(3, 5), (37,)]
  r = diversity.SketchProjection(dim=8, seed=1).matrix(shapes)
  assert r.shape == (52, 8) and set(np.unique(r)) == {-1.0, 0.0, 1.0}
  assert (np.abs(r).sum(1) == 1).all()
  for start, p in ((0, 15), (15, 37)):  # leaf by leaf: rows of 8 entries, one coordinate each
    for row in range(0, p - p % 8, 8):
      assert sorted(np.abs(r[start + row:start + row + 8]).argmax(1).tolist()) == list(range(8))
  assert not np.array_equal(r, diversity.SketchProjection(dim=8, seed=2).matrix(shapes))
  rng = np.random.default_rng(0)
  x = rng.normal(size=(20, 20000)).astype(np.float32)
  sk = diversity.SketchProjection(dim=1024, seed=0)
  zx = np.stack([np.asarray(sk.project({"w": jnp.asarray(v)})) for v in x])
  ux = x / np.linalg.norm(x, axis=1, keepdims=True)
  uz = zx / np.linalg.norm(zx, axis=1, keepdims=True)
  assert np.abs(ux @ ux.T - uz @ uz.T).max() < 4 / np.sqrt(1024)
  assert np.allclose(np.linalg.norm(zx, axis=1) / np.linalg.norm(x, axis=1), 1, atol=0.15)
  a, b = x[0], x[1] + 0.5 * x[0]
  est = [float(np.dot(*(np.asarray(diversity.SketchProjection(dim=64, seed=k).project(
      {"w": jnp.asarray(v)})) for v in (a, b)))) for k in range(100)]
  assert abs(np.mean(est) - np.dot(a, b)) < 4 * np.std(est) / np.sqrt(100)


@pytest.fixture(scope="module")
def tiny():
  from models.tokenizer import load_tokenizer
  tok = load_tokenizer("bytes")
  model = models.Transformer(models.ModelConfig(vocab_size=260, d_model=32, n_layers=2,
                                                n_heads=4, n_kv_heads=2, head_dim=8, d_ff=64),
                             rngs=nnx.Rngs(0))
  return model, tok


def _docs(tok, texts):
  return [np.asarray(tok.encode(t), np.int32) for t in texts]


def test_pipeline_copies_score_one_and_the_seed_fixes_the_score(tiny):
  model, tok = tiny
  from rlp import corpora
  docs = _docs(tok, corpora.toy_documents("train", 6, 0.0))
  kw = dict(seq_len=64, proj_dim=64, batch_size=4)
  same = diversity.measure(model, [docs[0]] * 6, **kw)
  assert same.g_vendi == pytest.approx(1.0, abs=1e-3) and same.n == 6
  first = diversity.measure(model, docs, **kw)
  assert 1.5 < first.g_vendi <= 6 and first.z.shape == (6, 64)
  assert diversity.measure(model, docs, **kw).g_vendi == first.g_vendi  # same seed, same score
  other = diversity.measure(model, docs, seed=1, **kw).g_vendi
  assert other != first.g_vendi and other == pytest.approx(first.g_vendi, rel=0.25)
  # a short last batch is padded, and the padding rows do not count
  assert diversity.measure(model, docs[:5], **kw).n == 5
  assert diversity.measure(model, docs[:5], **kw).g_vendi == pytest.approx(
      diversity.g_vendi(first.z[:5]), rel=1e-4)


def test_sketch_and_dense_give_the_same_score_on_real_gradients(tiny):
  """On a small model's gradients of 16 documents (two kinds), at d = 64: the mean G-Vendi over
  3 seeds of the sketch is within 10% of the dense projection's (seed-to-seed spread of either:
  about 5%)."""
  model, tok = tiny
  from rlp import corpora
  docs = _docs(tok, corpora.toy_documents("train", 8, 0.0) + corpora.reasoning_documents("train", 8))
  got = {p: np.mean([diversity.measure(model, docs, seq_len=64, proj_dim=64, seed=k,
                                       projection=p).g_vendi for k in range(3)])
         for p in ("sketch", "dense")}
  assert abs(got["sketch"] - got["dense"]) < 0.1 * got["dense"], got


def test_an_interrupted_scoring_run_continues_where_it_stopped(tiny, tmp_path, monkeypatch):
  model, tok = tiny
  from rlp import corpora
  docs = _docs(tok, corpora.toy_documents("train", 10, 0.0))
  kw = dict(seq_len=64, proj_dim=32, batch_size=4)
  whole = diversity.measure(model, docs, **kw)
  state = str(tmp_path / "partial.npz")
  real = diversity.make_projector
  calls = []

  def dies_on_the_third_batch(*a, **k):
    fn = real(*a, **k)

    def counted(*args):
      calls.append(1)
      if len(calls) == 3:
        raise KeyboardInterrupt
      return fn(*args)
    return counted
  monkeypatch.setattr(diversity, "make_projector", dies_on_the_third_batch)
  with pytest.raises(KeyboardInterrupt):
    diversity.measure(model, docs, state_file=state, **kw)
  monkeypatch.setattr(diversity, "make_projector", real)
  resumed = diversity.measure(model, docs, state_file=state, **kw)  # the third batch only
  assert resumed.g_vendi == pytest.approx(whole.g_vendi, rel=1e-6) and resumed.n == 10
  np.testing.assert_allclose(resumed.z, whole.z, rtol=1e-5, atol=1e-6)
  with pytest.raises(diversity.DiversityError, match="differs in proj_dim"):
    diversity.measure(model, docs, state_file=state, **{**kw, "proj_dim": 16})


@pytest.mark.slow
def test_two_tasks_mixed_score_above_either_alone_on_smollm2():
  """Needs a trained proxy (a random model's gradients do not tell tasks apart): SmolLM2."""
  from rlp import corpora
  model, tok = models.load_gguf(models.smollm2_path(), with_tokenizer=True)
  rng = np.random.default_rng(0)
  arith = corpora.toy_documents("train", 6, 0.0)  # one task: digit sums
  prose = [f"Alice has {rng.integers(2, 99)} apples and gives {rng.integers(1, 9)} of them to "
           f"Bob, who eats {rng.integers(1, 5)}." for _ in range(6)]  # another: one sentence form
  # one pass over all 12 documents (a document's projected gradient does not depend on the
  # others in its batch: test_pipeline_copies_score_one_and_the_seed_fixes_the_score); the three
  # sets are scored from its rows
  both = diversity.measure(model, _docs(tok, arith + prose), seq_len=40, proj_dim=32,
                           batch_size=12)
  assert both.g_vendi == pytest.approx(diversity.g_vendi(both.z), rel=1e-4)
  a, b = diversity.g_vendi(both.z[:6]), diversity.g_vendi(both.z[6:])
  mix = diversity.g_vendi(both.z[[0, 1, 2, 6, 7, 8]])
  assert mix > max(a, b), (a, b, mix)


def test_selection_prefers_the_rare_and_spreads_over_clusters():
  rng = np.random.default_rng(0)
  centres = rng.normal(size=(3, 32))
  sizes = [40, 15, 5]
  z = np.concatenate([c + 0.05 * rng.normal(size=(k, 32)) for c, k in zip(centres, sizes)])
  label = np.repeat([0, 1, 2], sizes)
  for by in ("cluster", "greedy"):
    idx = diversity.select(z, 9, by=by)
    assert len(set(idx.tolist())) == 9
    # the common group (2/3 of the pool) is under-represented; greedy also covers every group
    assert np.mean(label[idx] == 0) < 0.5, (by, label[idx])
    if by == "greedy":
      assert set(label[idx]) == {0, 1, 2}, label[idx]
  # greedy raises the (order-2) Vendi score step by step: above random subsets of the same size
  chosen = diversity.g_vendi(z[diversity.select(z, 9, by="greedy")])
  rand = [diversity.g_vendi(z[rng.choice(len(z), 9, replace=False)]) for _ in range(20)]
  assert chosen > max(rand), (chosen, max(rand))
  with pytest.raises(diversity.DiversityError, match="pool size"):
    diversity.select(z, 100)
