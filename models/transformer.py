"""Flax NNX decoder (Llama / Qwen2 / Qwen3 / SmolLM2) with scanned layers and KV-cache decoding.

Per-layer weights are stacked on a leading `layers` axis, so the same block is compiled once and
applied with `jax.lax.scan` (or a Python loop when `scan_layers=False`). Every parameter carries a
`logical_axes` metadata tuple that rlp/sharding.py maps onto the device mesh.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx, struct

from models import layers
from models.config import ModelConfig

# name -> (logical axes without the leading "layers" axis, init kind)
_LAYER_PARAMS = {
    "attn_norm": (("embed",), "ones"),
    "wq": (("embed", "heads", "head_dim"), "fan_in"),
    "wk": (("embed", "kv_heads", "head_dim"), "fan_in"),
    "wv": (("embed", "kv_heads", "head_dim"), "fan_in"),
    "wo": (("heads", "head_dim", "embed"), "fan_in2"),
    "mlp_norm": (("embed",), "ones"),
    "w_gate": (("embed", "mlp"), "fan_in"),
    "w_up": (("embed", "mlp"), "fan_in"),
    "w_down": (("mlp", "embed"), "fan_in"),
}
_BIAS_PARAMS = {"bq": ("heads", "head_dim"), "bk": ("kv_heads", "head_dim"),
                "bv": ("kv_heads", "head_dim")}
_QK_NORM_PARAMS = {"q_norm": ("head_dim",), "k_norm": ("head_dim",)}


def layer_param_shapes(cfg: ModelConfig) -> dict[str, tuple[tuple[int, ...], tuple[str, ...]]]:
  """Shapes (with the leading layer axis) and logical axes of every stacked layer parameter."""
  dims = {"embed": cfg.d_model, "heads": cfg.n_heads, "kv_heads": cfg.n_kv_heads,
          "head_dim": cfg.head_dim, "mlp": cfg.d_ff}
  names = {k: v[0] for k, v in _LAYER_PARAMS.items()}
  if cfg.attn_bias:
    names.update(_BIAS_PARAMS)
  if cfg.qk_norm:
    names.update(_QK_NORM_PARAMS)
  return {k: ((cfg.n_layers,) + tuple(dims[a] for a in axes), ("layers",) + axes)
          for k, axes in names.items()}


class Layers(nnx.Module):
  """Stacked per-layer parameters; a plain container (the block math is in Transformer)."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    for name, (shape, axes) in layer_param_shapes(cfg).items():
      kind = _LAYER_PARAMS.get(name, (None, "zeros"))[1]
      if name in _QK_NORM_PARAMS:
        kind = "ones"
      if kind == "ones":
        value = jnp.ones(shape, jnp.float32)
      elif kind == "zeros":
        value = jnp.zeros(shape, jnp.float32)
      else:
        fan_in = shape[1] if kind == "fan_in" else shape[1] * shape[2]
        value = jax.random.normal(rngs.params(), shape, jnp.float32) * fan_in ** -0.5
      setattr(self, name, nnx.Param(value, logical_axes=axes))


@struct.dataclass
class KVCache:
  """Standard decode cache. k, v: [L, B, S_max, K, D]; segment_ids: [B, S_max]; end: next index."""
  k: jax.Array
  v: jax.Array
  segment_ids: jax.Array
  end: jax.Array

  @property
  def max_len(self) -> int:
    return self.k.shape[2]


def dense(x, w, n_in: int = 1):
  """x [..., *in] times w [*in, *out] -> [..., *out], as one 2-D matmul: the leading dims of x and
  the `n_in` contracted dims are flattened first (free reshapes of row-major arrays).

  The same product as `einsum("...d,df->...f")`. On XLA:CPU that einsum's backward makes the
  weight gradient's dot read the [..., f] cotangent through a strided 3-D transposing copy; over
  2-D operands the dot reads them as stored (figures: docs/performance.md)."""
  lead = x.shape[:x.ndim - n_in]
  k = math.prod(w.shape[:n_in])
  y = x.reshape(-1, k) @ w.reshape(k, -1)
  return y.reshape(*lead, *w.shape[n_in:])


def decode_layout(kv):
  """(k, v) each [L, B, S, K, D] (as `Transformer.prefix_kv` returns them) -> the stacked layout
  `Transformer.decode_shared` reads: head-major, the keys with the token axis last (k [L, B, K, D,
  S], v [L, B, K, S, D]; see `layers.decode_attention`'s keys_last). One copy per rollout."""
  k, v = kv
  return jnp.moveaxis(k, -3, -1), jnp.swapaxes(v, -3, -2)


def thought_cache(n_layers: int, rows: int, per_row: int, n_kv: int, length: int,
                  head_dim: int, dtype, stacked: bool = True):
  """Empty stream caches in `Transformer.decode_shared`'s layout: (k [L, rows, per_row, K, D,
  length], v [L, rows, per_row, K, length, D]) stacked over the layers, or (stacked False) a list
  of L arrays each."""
  shapes = ((rows, per_row, n_kv, head_dim, length), (rows, per_row, n_kv, length, head_dim))
  if stacked:
    return tuple(jnp.zeros((n_layers, *sh), dtype) for sh in shapes)
  return tuple([jnp.zeros(sh, dtype) for _ in range(n_layers)] for sh in shapes)


def per_layer(tree) -> list:
  """A tree of arrays stacked over layers ([L, ...] leaves) -> a list of L trees, one per layer.
  The decode loop's layout: split once, outside the loop, so that no step slices its layer out of
  a stacked array (see `Transformer.decode_shared`)."""
  n = jax.tree.leaves(tree)[0].shape[0]
  return [jax.tree.map(lambda a, i=i: a[i], tree) for i in range(n)]


class Transformer(nnx.Module):

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    self.config = config
    c = config
    self.embed = nnx.Param(jax.random.normal(rngs.params(), (c.vocab_size, c.d_model), jnp.float32)
                           * 0.02, logical_axes=("vocab", "embed"))
    self.layers = Layers(c, rngs)
    self.final_norm = nnx.Param(jnp.ones((c.d_model,), jnp.float32), logical_axes=("embed",))
    if not c.tie_embeddings:
      self.lm_head = nnx.Param(jax.random.normal(rngs.params(), (c.d_model, c.vocab_size),
                                                 jnp.float32) * c.d_model ** -0.5,
                               logical_axes=("embed", "vocab"))

  # ---------------------------------------------------------------- public calls
  def __call__(self, tokens, positions=None, segment_ids=None):
    """Full causal forward. tokens int32 [B, S] -> float32 logits [B, S, V]."""
    return self.head(self.hidden(tokens, positions, segment_ids))

  def hidden(self, tokens, positions=None, segment_ids=None):
    """Full causal forward up to the LM head's input (after the final norm): [B, S, D] in the
    compute dtype. With `head_weight()` it feeds a fused head + loss (rlp.objective.
    linear_cross_entropy) that never materialises the [B, S, V] logits."""
    if positions is None:
      positions = jnp.broadcast_to(jnp.arange(tokens.shape[-1], dtype=jnp.int32), tokens.shape)
    use_cudnn = self.config.attention == "cudnn" and segment_ids is None
    if segment_ids is not None:
      mask = segment_ids[:, :, None] == segment_ids[:, None, :]
    else:
      mask = jnp.ones((1, 1, 1), bool)
    causal = jnp.tril(jnp.ones((tokens.shape[1], tokens.shape[1]), bool))[None]
    mask = mask & causal

    def attend(q, k, v, _):
      if use_cudnn:
        return layers.cudnn_causal_attention(q, k, v), None
      return layers.attention(q, k, v, mask), None

    x = self._trunk(tokens, positions, attend, None)[0]
    return layers.rms_norm(x, self.final_norm[...], self.config.norm_eps)

  def init_cache(self, batch: int, max_len: int, dtype=None) -> KVCache:
    c = self.config
    dtype = dtype or jnp.dtype(c.dtype)
    shape = (c.n_layers, batch, max_len, c.n_kv_heads, c.head_dim)
    return KVCache(k=jnp.zeros(shape, dtype), v=jnp.zeros(shape, dtype),
                   segment_ids=jnp.zeros((batch, max_len), jnp.int32),
                   end=jnp.zeros((), jnp.int32))

  def decode(self, tokens, cache: KVCache, positions=None, segment_ids=None):
    """Appends tokens [B, C] at cache.end; returns (logits [B, C, V], cache).

    Positions default to the cache index; segment ids (packed prompts) restrict attention to
    keys of the same segment, as in the full forward.
    """
    b, n = tokens.shape
    idx = cache.end + jnp.arange(n, dtype=jnp.int32)
    if positions is None:
      positions = jnp.broadcast_to(idx, (b, n))
    if segment_ids is None:
      segment_ids = jnp.ones((b, n), jnp.int32)
    seg_cache = jax.lax.dynamic_update_slice(cache.segment_ids, segment_ids.astype(jnp.int32),
                                             (0, cache.end))
    key_idx = jnp.arange(cache.max_len, dtype=jnp.int32)
    mask = (key_idx[None, None, :] <= idx[None, :, None]) & (
        segment_ids[:, :, None] == seg_cache[:, None, :])

    def attend(q, k, v, kv):
      ck, cv = kv
      ck = jax.lax.dynamic_update_slice(ck, k.astype(ck.dtype), (0, cache.end, 0, 0))
      cv = jax.lax.dynamic_update_slice(cv, v.astype(cv.dtype), (0, cache.end, 0, 0))
      return layers.attention(q, ck.astype(q.dtype), cv.astype(q.dtype), mask), (ck, cv)

    x, (ck, cv) = self._trunk(tokens, positions, attend, (cache.k, cache.v))
    cache = KVCache(k=ck, v=cv, segment_ids=seg_cache, end=cache.end + n)
    return self.logits(x), cache

  def decode_shared(self, tokens_BxNxC, positions_BxNxC, prefix_kv, prefix_mask_BxNxS,
                    thought_kv, write_index, filled: int | None = None, weights=None):
    """N streams per document decode C tokens against a shared prefix cache plus their own cache.

    The caches are head-major (the kv head ahead of the key axis) with the keys' token axis
    last, so attention reads them as stored (layers.decode_attention, keys_last): prefix_kv
    (k, v), computed once per document and never copied per stream, and the streams' own
    thought_kv (k, v). Two layouts, chosen by the caller:
    - stacked over layers, prefix k [L, B, K, D, S], v [L, B, K, S, D] (`decode_layout` of
      `prefix_kv`'s output) and thoughts k [L, B, N, K, D, T], v [L, B, N, K, T, D]
      (`thought_cache`): the layers run in a scan (or loop, per `scan_layers`), which slices each
      layer's weights and caches out of the stacked arrays at every call;
    - per-layer lists of L arrays (`per_layer` of the stacked prefix, `thought_cache(...,
      stacked=False)`), with `weights` from `self.layer_weights()` (each layer's weights, cast
      once): the layers run unrolled over them and nothing is sliced. A caller that decodes in
      a loop makes the lists and the weights once, outside it (faster steps on the CPU for a
      longer compile; docs/performance.md).
    The C new keys are written at `write_index`, and a query at thought index i sees thought keys
    <= i (the cache's keys before `write_index`, read only, and the new keys themselves; the
    cache is written once, after the attention, so a step costs the new keys' write, not a copy
    of the cache; on XLA:CPU only when compiled with `models.backend`'s options, see there).
    `filled` (static, optional): a bound on `write_index`; only the cache's first `filled` keys
    are read, so a step over a mostly empty long cache costs what the filled part
    does. Returns (logits [B, N, C, V], thought_kv in the layout given). Differentiable in all
    inputs.
    """
    b, n, c = tokens_BxNxC.shape
    unrolled = isinstance(thought_kv[0], (list, tuple))
    t_len = jax.tree.leaves(thought_kv[0])[0].shape[-1]
    t_read = t_len if filled is None else min(filled, t_len)
    old = jnp.broadcast_to(jnp.arange(t_read) < write_index, (b, n, c, t_read))
    new = jnp.broadcast_to(jnp.tril(jnp.ones((c, c), bool)), (b, n, c, c))

    def attend(q, k, v, kv):
      pk, pv, tk, tv = kv
      kh = jnp.transpose(k, (0, 1, 3, 4, 2)).astype(tk.dtype)  # [B, N, K, D, C]
      vh = jnp.swapaxes(v, 2, 3).astype(tv.dtype)  # [B, N, K, C, D]
      dt = q.dtype
      o = layers.decode_attention(
          q, (pk.astype(dt), pv.astype(dt), prefix_mask_BxNxS),
          [(tk[..., :t_read].astype(dt), tv[:, :, :, :t_read].astype(dt), old),
           (kh.astype(dt), vh.astype(dt), new)], keys_last=True)
      if not unrolled:  # written after the layer scan, so no layer copies its slice of the cache
        return o, (kh, vh)
      return o, (jax.lax.dynamic_update_slice(tk, kh, (0, 0, 0, 0, write_index)),
                 jax.lax.dynamic_update_slice(tv, vh, (0, 0, 0, write_index, 0)))

    if unrolled:
      weights = self.layer_weights() if weights is None else weights
      x, kv = self._trunk(tokens_BxNxC, positions_BxNxC, attend,
                          list(zip(*prefix_kv, *thought_kv)), weights=weights)
      return self.logits(x), tuple(list(a) for a in zip(*kv))
    x, (k_new, v_new) = self._trunk(tokens_BxNxC, positions_BxNxC, attend,
                                    (*prefix_kv, *thought_kv))
    return self.logits(x), (
        jax.lax.dynamic_update_slice(thought_kv[0], k_new, (0, 0, 0, 0, 0, write_index)),
        jax.lax.dynamic_update_slice(thought_kv[1], v_new, (0, 0, 0, 0, write_index, 0)))

  def layer_weights(self) -> list[dict]:
    """Each layer's weights, in the compute dtype, as a list of L dicts (see `decode_shared`)."""
    dt = jnp.dtype(self.config.dtype)
    return per_layer({name: getattr(self.layers, name)[...].astype(dt)
                      for name in layer_param_shapes(self.config)})

  def shared_forward(self, tokens_BxNxC, positions_BxNxC, prefix_kv, prefix_mask_BxNxS):
    """Teacher-forced forward of N streams per document after a shared prefix cache: what
    `decode_shared` computes from empty stream caches at index 0, without the caches (no cache
    writes to differentiate through). The training forward over thoughts: the head's input
    [B, N, C, D] (after the final norm; `head` maps it to logits, over the entries needed)."""
    c = tokens_BxNxC.shape[-1]
    tmask = jnp.broadcast_to(jnp.tril(jnp.ones((c, c), bool)), tokens_BxNxC.shape[:2] + (c, c))

    def attend(q, k, v, kv):
      pk, pv = kv
      dt = q.dtype
      return layers.shared_prefix_attention(q, pk.astype(dt), pv.astype(dt), prefix_mask_BxNxS,
                                            k, v, tmask), None

    x, _ = self._trunk(tokens_BxNxC, positions_BxNxC, attend, prefix_kv)
    return layers.rms_norm(x, self.final_norm[...], self.config.norm_eps)

  def prefix_kv(self, tokens_BxS, positions=None):
    """The K/V of every layer for a whole document in one forward: ([L,B,S,K,D], [L,B,S,K,D])."""
    s = tokens_BxS.shape[1]
    if positions is None:
      positions = jnp.broadcast_to(jnp.arange(s, dtype=jnp.int32), tokens_BxS.shape)
    causal = jnp.tril(jnp.ones((s, s), bool))[None]

    def attend(q, k, v, _):  # each layer's k, v leave the scan as its outputs: no cache writes
      return layers.attention(q, k, v, causal), (k, v)

    return self._trunk(tokens_BxS, positions, attend, None)[1]

  def logits(self, x):
    """The trunk's output -> float32 logits (final norm, then the head)."""
    return self.head(layers.rms_norm(x, self.final_norm[...], self.config.norm_eps))

  def head(self, x):
    """Normed hidden states -> float32 logits."""
    if self.config.tie_embeddings:  # contract with [V, D] directly: no transposed copy
      return jnp.einsum("...d,vd->...v", x, self.embed[...].astype(x.dtype),
                        preferred_element_type=jnp.float32)
    return jnp.einsum("...d,dv->...v", x, self.lm_head[...].astype(x.dtype),
                      preferred_element_type=jnp.float32)

  def head_weight(self):
    """The LM head as a float32 [V, D] matrix (the tied embedding, or lm_head transposed)."""
    return self.embed[...] if self.config.tie_embeddings else self.lm_head[...].T

  # ---------------------------------------------------------------- the block
  def _trunk(self, tokens, positions, attend: Callable, caches: Any, weights: list | None = None):
    """The embedding and the blocks. caches: stacked over layers (or None), attend's kv input.
    weights: None (the stacked weights, scanned or looped per `scan_layers`), or per-layer
    weights (`layer_weights`) with caches a list per layer: the blocks unrolled over them, no
    layer sliced out of a stacked array; the kv outputs are then a list per layer too."""
    c = self.config
    dt = jnp.dtype(c.dtype)
    x = jnp.take(self.embed[...], tokens, axis=0).astype(dt)
    inv_freq = layers.rope_inv_freq(c.head_dim, c.rope_theta, c.rope_scaling)
    cos, sin = layers.rope_tables(positions, inv_freq)

    def block(x, layer):
      p, kv = layer
      p = jax.tree.map(lambda a: a.astype(dt), p)
      h = layers.rms_norm(x, p["attn_norm"], c.norm_eps)
      q, k, v = (dense(h, p[w]) for w in ("wq", "wk", "wv"))
      if c.attn_bias:
        q, k, v = q + p["bq"], k + p["bk"], v + p["bv"]
      if c.qk_norm:
        q = layers.rms_norm(q, p["q_norm"], c.norm_eps)
        k = layers.rms_norm(k, p["k_norm"], c.norm_eps)
      q, k = layers.apply_rope(q, cos, sin), layers.apply_rope(k, cos, sin)
      o, kv = attend(q, k, v, kv)
      x = x + dense(o, p["wo"], n_in=2)
      h = layers.rms_norm(x, p["mlp_norm"], c.norm_eps)
      g, u = dense(h, p["w_gate"]), dense(h, p["w_up"])
      x = x + dense(jax.nn.silu(g) * u, p["w_down"])
      return x, kv

    if c.remat != "none":
      policy = (jax.checkpoint_policies.dots_with_no_batch_dims_saveable if c.remat == "dots"
                else jax.checkpoint_policies.nothing_saveable)
      block = jax.checkpoint(block, policy=policy, prevent_cse=not c.scan_layers)
    stacked = weights is None
    if stacked:
      params = {name: getattr(self.layers, name)[...] for name in layer_param_shapes(c)}
      if c.scan_layers:
        return jax.lax.scan(block, x, (params, caches))
      weights = per_layer(params)
      caches = [None] * c.n_layers if caches is None else per_layer(caches)
    outs = []
    for layer in zip(weights, caches):
      x, kv = block(x, layer)
      outs.append(kv)
    if not stacked:
      return x, outs
    return x, (None if outs[0] is None else jax.tree.map(lambda *a: jnp.stack(a), *outs))
