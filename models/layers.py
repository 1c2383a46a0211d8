"""Pure functions of the decoder: norm, rotary embedding, attention. No parameters live here."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

NEG_INF = -1e30


def rms_norm(x, weight, eps):
  x32 = x.astype(jnp.float32)
  x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
  return (x32 * weight).astype(x.dtype)


def rope_inv_freq(head_dim: int, theta: float, scaling=None):
  inv = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
  if scaling is None:
    return inv
  factor, low, high, old_len = scaling  # Llama 3 "llama3" rope_type, as in transformers.
  low_wavelen, high_wavelen = old_len / low, old_len / high
  wavelen = 2 * math.pi / inv
  scaled = jnp.where(wavelen > low_wavelen, inv / factor, inv)
  smooth = (old_len / wavelen - low) / (high - low)
  smoothed = (1 - smooth) * scaled / factor + smooth * scaled
  medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
  return jnp.where(medium, smoothed, scaled)


def rope_tables(positions, inv_freq):
  """cos/sin for positions [...]; returns [..., 1, head_dim] (broadcast over heads)."""
  ang = positions.astype(jnp.float32)[..., None] * inv_freq
  ang = jnp.concatenate([ang, ang], axis=-1)[..., None, :]
  return jnp.cos(ang), jnp.sin(ang)


def apply_rope(x, cos, sin):
  """Hugging Face (rotate-half) layout: x [..., heads, head_dim]."""
  half = x.shape[-1] // 2
  x32 = x.astype(jnp.float32)
  rot = jnp.concatenate([-x32[..., half:], x32[..., :half]], axis=-1)
  return (x32 * cos + rot * sin).astype(x.dtype)


def _grouped(q, n_kv):
  *lead, h, d = q.shape
  return q.reshape(*lead, n_kv, h // n_kv, d)


def attention(q_BxTxHxD, k_BxSxKxD, v_BxSxKxD, mask_BxTxS):
  """Grouped-query softmax attention with an explicit boolean mask; softmax in float32."""
  n_kv = k_BxSxKxD.shape[-2]
  scale = q_BxTxHxD.shape[-1] ** -0.5
  q = _grouped(q_BxTxHxD, n_kv)
  s = jnp.einsum("btkrd,bskd->bkrts", q, k_BxSxKxD, preferred_element_type=jnp.float32) * scale
  s = jnp.where(mask_BxTxS[:, None, None], s, NEG_INF)
  p = jax.nn.softmax(s, axis=-1).astype(v_BxSxKxD.dtype)
  o = jnp.einsum("bkrts,bskd->btkrd", p, v_BxSxKxD)
  return o.reshape(q_BxTxHxD.shape)


def cudnn_causal_attention(q, k, v):
  return jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="cudnn")


def shared_prefix_attention(q_BxNxCxHxD, pk_BxSxKxD, pv_BxSxKxD, pmask_BxNxS,
                            tk_BxNxTxKxD, tv_BxNxTxKxD, tmask_BxNxCxT):
  """Attention of N thought streams per document over a shared prefix cache plus their own keys.

  The prefix K/V are stored once per document ([B, S]) and never copied per thought: the N
  streams read them through a batched matmul per kv head, masked per stream (keys before its
  position). Computed as `decode_attention` after moving the (small) K/V head-major, so the
  score and output matmuls produce and consume the [B, K, N, C * R, S] scores in the order a
  batched matmul makes them and XLA transposes none of them (docs/performance.md).
  """
  hm = lambda a: jnp.swapaxes(a, -3, -2)  # noqa: E731  [..., S, K, D] -> [..., K, S, D]
  return decode_attention(q_BxNxCxHxD, (hm(pk_BxSxKxD), hm(pv_BxSxKxD), pmask_BxNxS),
                          [(hm(tk_BxNxTxKxD), hm(tv_BxNxTxKxD), tmask_BxNxCxT)])


def decode_attention(q_BxNxCxHxD, prefix, segments, keys_last: bool = False):
  """One softmax over a shared prefix and any number of per-stream key segments, over head-major
  caches (the decode loop's layout).

  prefix: (k [B, K, S, D], v, mask [B, N, S]), one per document, read by all N streams;
  segments: [(k [B, N, K, T, D], v, mask [B, N, C, T]), ...], each stream's own keys (e.g. the
  filled thought cache and the C keys being decoded now), so a decode step attends to its new
  keys without first writing them into the cache. With the kv head ahead of the key axis, each
  score and output einsum is a plain batched matmul over the cache as stored (token-major caches
  make XLA copy every layer's cache into this order at every decode step). Softmax in float32.

  keys_last: the keys (not the values) are stored with the token axis last, [B, K, D, S] and
  [B, N, K, D, T]: the score matmuls then read a [D, S] right operand, the layout a matmul
  kernel streams without transposing it (the decode loop's caches). Figures: docs/performance.md.
  """
  pk, pv, pmask = prefix
  b, n, c, h, d = q_BxNxCxHxD.shape
  kh = pk.shape[1]
  r = h // kh
  scale = d ** -0.5
  q = q_BxNxCxHxD.reshape(b, n, c, kh, r, d)
  qp = jnp.transpose(q, (0, 3, 1, 2, 4, 5)).reshape(b, kh, n * c * r, d)
  sp = jnp.einsum("bkmd,bkds->bkms" if keys_last else "bkmd,bksd->bkms", qp, pk,
                  preferred_element_type=jnp.float32)
  sp = jnp.where(pmask[:, None, :, None, :], sp.reshape(b, kh, n, c * r, -1) * scale, NEG_INF)
  qs = jnp.transpose(q, (0, 1, 3, 2, 4, 5)).reshape(b, n, kh, c * r, d)
  scores = []  # per segment [B, N, K, C * R, T]
  for k, _, mask in segments:
    st = jnp.einsum("bnkqd,bnkdt->bnkqt" if keys_last else "bnkqd,bnktd->bnkqt", qs, k,
                    preferred_element_type=jnp.float32)
    m = jnp.broadcast_to(mask[:, :, None, :, None, :], (b, n, 1, c, r, mask.shape[-1]))
    scores.append(jnp.where(m.reshape(b, n, 1, c * r, -1), st * scale, NEG_INF))
  mx = functools.reduce(jnp.maximum, [s.max(-1) for s in scores], jnp.swapaxes(sp.max(-1), 1, 2))
  ep = jnp.exp(sp - jnp.swapaxes(mx, 1, 2)[..., None])
  es = [jnp.exp(s - mx[..., None]) for s in scores]
  z = functools.reduce(jnp.add, [e.sum(-1) for e in es], jnp.swapaxes(ep.sum(-1), 1, 2))
  dt = pv.dtype
  op = jnp.einsum("bkms,bksd->bkmd", ep.reshape(b, kh, n * c * r, -1).astype(dt), pv)
  o = jnp.swapaxes(op.reshape(b, kh, n, c * r, d), 1, 2)  # [B, N, K, C * R, D]
  for e, (_, v, _) in zip(es, segments):
    o = o + jnp.einsum("bnkqt,bnktd->bnkqd", e.astype(dt), v)
  o = (o / z[..., None]).astype(dt).reshape(b, n, kh, c, r, d)
  return jnp.transpose(o, (0, 1, 3, 2, 4, 5)).reshape(b, n, c, h, d)
