"""Cached incremental decode (standard and shared-prefix) equals the full forward pass."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import models
from models import layers
from models.transformer import decode_layout, per_layer, thought_cache

CFG = models.ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=1,
                         head_dim=8, d_ff=48)


@pytest.fixture(scope="module")
def model():
  return models.Transformer(CFG, rngs=nnx.Rngs(0))


def _toks(b, s, seed=0):
  return jnp.asarray(np.random.default_rng(seed).integers(0, CFG.vocab_size, (b, s)), jnp.int32)


@pytest.mark.parametrize("chunks", [(5, 1, 1, 5), (1,) * 12, (12,)])
def test_incremental_decode_equals_full_forward(model, chunks):
  toks = _toks(3, 12)
  full = model(toks)
  cache = model.init_cache(3, 16)
  outs, start = [], 0
  for c in chunks:
    logits, cache = model.decode(toks[:, start:start + c], cache)
    outs.append(logits)
    start += c
  assert int(cache.end) == 12
  assert float(jnp.abs(jnp.concatenate(outs, 1) - full).max()) <= 1e-5


def test_packed_segments_decode_equals_full_forward(model):
  toks = _toks(2, 10, seed=1)
  seg = jnp.asarray([[1, 1, 1, 1, 2, 2, 2, 2, 2, 2], [1, 1, 1, 1, 1, 1, 1, 2, 2, 3]], jnp.int32)
  starts = jnp.concatenate([jnp.ones((2, 1), bool), seg[:, 1:] != seg[:, :-1]], 1)
  idx = jnp.arange(10)[None]
  pos = idx - jax.lax.cummax(jnp.where(starts, idx, 0), axis=1)
  full = model(toks, positions=pos, segment_ids=seg)
  # Packing must isolate documents: segment 2 of row 0 alone gives the same logits.
  alone = model(toks[:1, 4:], positions=pos[:1, 4:])
  assert float(jnp.abs(alone - full[:1, 4:]).max()) <= 1e-5
  cache = model.init_cache(2, 10)
  outs = []
  for s, e in [(0, 3), (3, 6), (6, 10)]:
    logits, cache = model.decode(toks[:, s:e], cache, positions=pos[:, s:e],
                                 segment_ids=seg[:, s:e])
    outs.append(logits)
  assert float(jnp.abs(jnp.concatenate(outs, 1) - full).max()) <= 1e-5


@pytest.mark.parametrize("unrolled", [False, True])
def test_shared_prefix_decode_equals_full_forward(model, unrolled):
  """N streams per document, each at its own cut t, read one shared prefix cache; caches stacked
  over the layers (a layer scan) or one array per layer (the layers unrolled)."""
  b, s, n, tlen = 2, 9, 3, 4
  doc = _toks(b, s, seed=2)
  cut = jnp.asarray([[2, 5, 9], [1, 4, 7]], jnp.int32)  # stream n sees doc[:cut]
  thought = _toks(b * n, tlen, seed=3).reshape(b, n, tlen)
  pk, pv = decode_layout(model.prefix_kv(doc))
  pmask = jnp.arange(s)[None, None, :] < cut[:, :, None]
  tkv = thought_cache(CFG.n_layers, b, n, CFG.n_kv_heads, tlen, CFG.head_dim, jnp.float32,
                      stacked=not unrolled)
  if unrolled:
    pk, pv = per_layer(pk), per_layer(pv)
  pos = cut[:, :, None] + jnp.arange(tlen)
  # Two calls (3 tokens, then 1) to exercise the write index.
  l1, tkv = model.decode_shared(thought[..., :3], pos[..., :3], (pk, pv), pmask, tkv, 0)
  l2, tkv = model.decode_shared(thought[..., 3:], pos[..., 3:], (pk, pv), pmask, tkv, 3)
  got = jnp.concatenate([l1, l2], axis=2)
  assert isinstance(tkv[0], list) == unrolled  # the caches come back in the layout given
  for i in range(b):
    for j in range(n):
      c = int(cut[i, j])
      seq = jnp.concatenate([doc[i, :c], thought[i, j]])[None]
      want = model(seq)[0, c:]
      assert float(jnp.abs(got[i, j] - want).max()) <= 1e-5


def _reference_attention(q, prefix, segments):
  """Plain attention of each stream's C queries over its keys written out in full: the shared
  prefix copied per stream and query, then each segment; grouped queries read kv head h // R."""
  pk, pv, pmask = prefix
  b, n, c, h, d = q.shape
  r = h // pk.shape[-2]
  keys = [jnp.broadcast_to(pk[:, None, None], (b, n, c) + pk.shape[1:])]
  vals = [jnp.broadcast_to(pv[:, None, None], (b, n, c) + pv.shape[1:])]
  masks = [jnp.broadcast_to(pmask[:, :, None, :], (b, n, c, pk.shape[1]))]
  for k_, v_, m_ in segments:
    keys.append(jnp.broadcast_to(k_[:, :, None], (b, n, c) + k_.shape[2:]))
    vals.append(jnp.broadcast_to(v_[:, :, None], (b, n, c) + v_.shape[2:]))
    masks.append(m_)
  k_all = jnp.repeat(jnp.concatenate(keys, 3), r, axis=4)  # [B, N, C, L, H, D]
  v_all = jnp.repeat(jnp.concatenate(vals, 3), r, axis=4)
  scores = jnp.einsum("bnchd,bnclhd->bnchl", q, k_all) * d ** -0.5
  scores = jnp.where(jnp.concatenate(masks, -1)[:, :, :, None], scores, -jnp.inf)
  return jnp.einsum("bnchl,bnclhd->bnchd", jax.nn.softmax(scores, -1), v_all)


@pytest.mark.parametrize("c", [1, 3])
def test_head_major_decode_attention_equals_plain_attention(c):
  """The decode loop's attention over head-major caches is plain attention over the keys written
  out per stream, to float32 rounding, with grouped queries (2 kv heads of 3), several streams
  and a masked prefix."""
  b, n, kh, r, d, s, t = 2, 3, 2, 3, 8, 7, 5
  ks = jax.random.split(jax.random.key(0), 8)
  q = jax.random.normal(ks[0], (b, n, c, kh * r, d))
  pk, pv = (jax.random.normal(k_, (b, s, kh, d)) for k_ in ks[1:3])
  tk, tv = (jax.random.normal(k_, (b, n, t, kh, d)) for k_ in ks[3:5])
  nk, nv = (jax.random.normal(k_, (b, n, c, kh, d)) for k_ in ks[5:7])
  pmask = jax.random.bernoulli(ks[7], 0.6, (b, n, s)).at[:, :, 0].set(True)
  old = jnp.broadcast_to(jnp.arange(t) < 3, (b, n, c, t))
  new = jnp.broadcast_to(jnp.tril(jnp.ones((c, c), bool)), (b, n, c, c))
  want = _reference_attention(q, (pk, pv, pmask), [(tk, tv, old), (nk, nv, new)])
  hm = lambda a: jnp.swapaxes(a, -3, -2)  # noqa: E731  [.., S, K, D] -> [.., K, S, D]
  got = layers.decode_attention(q, (hm(pk), hm(pv), pmask),
                                [(hm(tk), hm(tv), old), (hm(nk), hm(nv), new)])
  assert got.shape == want.shape
  assert float(jnp.abs(got - want).max()) <= 1e-5
  # keys_last: the keys stored [.., K, D, S], the decode loop's caches (decode_layout)
  got = layers.decode_attention(q, (*decode_layout((pk, pv)), pmask),
                                [(*decode_layout((tk, tv)), old), (*decode_layout((nk, nv)), new)],
                                keys_last=True)
  assert float(jnp.abs(got - want).max()) <= 1e-5


def test_greedy_generate_equals_argmax_of_full_forward(model):
  prompt = _toks(1, 5, seed=4)
  out = np.asarray(models.greedy_generate(model, prompt, 6))[0]
  seq = np.asarray(prompt[0]).tolist()
  for _ in range(6):
    seq.append(int(jnp.argmax(model(jnp.asarray([seq], jnp.int32))[0, -1])))
  assert out.tolist() == seq[5:]


@pytest.mark.parametrize("remat,scan", [("full", True), ("dots", False), ("none", False)])
def test_remat_and_unrolled_layers_are_numerically_identical(model, remat, scan):
  toks = _toks(2, 7, seed=5)
  other = models.weights.model_from_params(CFG.replace(remat=remat, scan_layers=scan),
                                           models.weights.pure_params(model))

  def loss(m):
    return jnp.mean(m(toks) ** 2)

  np.testing.assert_allclose(np.asarray(other(toks)), np.asarray(model(toks)), atol=1e-5)
  g1 = nnx.grad(loss)(model)
  g2 = nnx.grad(loss)(other)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
