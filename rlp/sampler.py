"""Thought rollouts: one prefill per document, all thoughts decode against its shared prefix cache.

For each document b, position t (k per document) and thought g (G per position), a stream decodes
    [x_<t] + template + <think> + thought + </think>  and scores  x_t
Stream n = k * G + g of document b reads the document's prefix K/V (computed once, [B, S]) masked
to keys < t, plus its own thought cache. The decode loop is a `jax.lax.while_loop` that stops when
every stream has closed its thought and scored x_t; for long thought buffers it is a few loops in
turn, each reading only the part of the thought cache filled so far (`SamplerConfig.read_spans`).

Per-token log-probs are those of the sampling policy softmax(logits / temperature) (top-k/top-p
only restrict what is sampled), which is what the trainer recomputes for the importance ratio.
S_pred = log p(x_t | x_<t, thought) uses the raw logits (temperature 1): it is a likelihood.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from flax import struct

from models import backend
from models.sampling import last_axis_argmax, sample_logits
from models.transformer import decode_layout, per_layer, thought_cache
from rlp import schema

PHASE_GEN, PHASE_CLOSE, PHASE_DONE = 0, 1, 2


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
  """How thoughts are sampled. The fields declared `from_run` are the run config's rlp.* fields
  (default, allowed values and help: rlp/schema.py); a group of 1 is allowed here (evaluation
  samples one thought per position), training needs 2."""
  group_size: int = schema.from_run("rlp.group_size", check=False)
  # sampled tokens, not counting the appended </think> of a truncation
  max_thought_len: int = schema.from_run("rlp.max_thought_len")
  min_thought_len: int = schema.from_run("rlp.min_thought_len")
  temperature: float = schema.from_run("rlp.temperature")
  top_k: int = schema.from_run("rlp.top_k")
  top_p: float = schema.from_run("rlp.top_p")
  prompt_ids: tuple[int, ...] = (1,)  # template + <think>, forced before every thought
  close_ids: tuple[int, ...] = (2,)  # </think> (one id, or the marker's text tokens)
  close_alts: tuple[tuple[int, ...], ...] = ()  # other tokenizations of </think> that end a thought
  naive: bool = False  # copy the prefix per stream (the baseline the shared cache replaces)
  predict: bool = False  # RPT: sample one prediction token after </think> (a policy action)
  attend_block: int = 128  # decode steps read only the filled part of the thought cache, in
  #                          spans that double from this length; 0 = always the whole buffer
  unroll_layers: bool | None = None  # the decode loop's layers unrolled over per-layer weights
  #                          and caches made once per rollout (True), or scanned over the stacked
  #                          ones (False: a shorter compile, but every step slices each layer's
  #                          weights and caches out of them); None = unrolled on CPU, where those
  #                          slices are copies (see `Transformer.decode_shared`), scanned elsewhere

  def __post_init__(self):
    schema.check_from_run(self)
    if self.group_size < 1:
      raise ValueError(f"group_size must be >= 1 (got {self.group_size})")
    if self.min_thought_len < 1 or self.min_thought_len > self.max_thought_len:
      raise ValueError(f"need 1 <= min_thought_len <= max_thought_len (got {self.min_thought_len}, "
                       f"{self.max_thought_len})")
    if not self.close_ids or not self.prompt_ids or not all(self.close_alts):
      raise ValueError("prompt_ids, close_ids and every close_alts entry must not be empty")
    if self.attend_block < 0:
      raise ValueError(f"attend_block must be >= 0 (got {self.attend_block})")
    if self.unroll_layers not in (None, True, False):
      raise ValueError(f"unroll_layers must be True, False or None (auto) "
                       f"(got {self.unroll_layers!r})")

  @property
  def closers(self) -> tuple[tuple[int, ...], ...]:
    return (tuple(self.close_ids),) + tuple(tuple(a) for a in self.close_alts)

  @property
  def buffer_len(self) -> int:
    return self.max_thought_len + len(self.close_ids) + int(self.predict)

  def read_spans(self) -> tuple[int, ...]:
    """The static lengths of thought cache that successive decode loops read (prompt + thought
    buffer in all): attend_block, doubling while at most half the cache, then the whole cache (so
    no step reads more than twice the keys it needs once past attend_block); one loop when the
    cache is under 2 x attend_block."""
    full = len(self.prompt_ids) + self.buffer_len
    spans, span = [], self.attend_block
    while 0 < span <= full // 2:
      spans.append(span)
      span *= 2
    return tuple(spans) + (full,)


@struct.dataclass
class Rollout:
  tokens: jax.Array  # [B, K, G, T] thought tokens incl. </think> (sampled or appended)
  logp: jax.Array  # [B, K, G, T] sampling-policy log-probs of sampled tokens (0 elsewhere)
  mask: jax.Array  # [B, K, G, T] 1 on tokens the policy sampled (these get gradient)
  valid: jax.Array  # [B, K, G, T] 1 on every token of the thought incl. appended </think>
  lengths: jax.Array  # [B, K, G] thought length: the tokens before the closer, whether the closer
  #                     was sampled or appended at truncation (the closer itself never counts)
  truncated: jax.Array  # [B, K, G] bool: hit max_thought_len, </think> appended
  s_pred: jax.Array  # [B, K, G] log p_theta(x_t | x_<t, thought)
  targets: jax.Array  # [B, K] x_t
  cuts: jax.Array  # [B, K] the positions t the thoughts were inserted at (x_t = docs[b, t])
  prediction: jax.Array  # [B, K, G] RPT's predicted token (predict=True), else -1
  pred_argmax: jax.Array  # [B, K, G] the model's most likely x_t after </think> (accuracy)


@struct.dataclass
class DecodeState:
  """The rollout's while-loop carry: per stream [B, N] unless noted."""
  i: jax.Array  # [] decode step (index into the thought buffer)
  logits: jax.Array  # [B, N, V] the next token's logits
  tkv: Any  # (k, v): the streams' own caches (models.transformer.thought_cache's layout:
  #           k [L, rows, per_row, K, D, T], v [L, rows, per_row, K, T, D])
  #           or, with unrolled layers, a list of L arrays each
  buf: jax.Array  # [B, N, T] tokens written (sampled, or the forced closer)
  logp: jax.Array  # [B, N, T] sampling log-probs of sampled tokens
  mask: jax.Array  # [B, N, T] 1 where the policy sampled
  valid: jax.Array  # [B, N, T] 1 on every written token
  phase: jax.Array  # PHASE_GEN -> PHASE_CLOSE -> PHASE_DONE
  close_pos: jax.Array  # closer tokens already fed
  gen_len: jax.Array  # tokens generated so far
  thought_len: jax.Array  # the thought's length before its closer, once known
  truncated: jax.Array  # bool: the closer was appended at the length limit
  s_pred: jax.Array  # log p(x_t | x_<t, thought), once the closer is fed
  pred: jax.Array  # RPT's sampled prediction of x_t, else -1
  top: jax.Array  # the argmax after the closer

  @classmethod
  def start(cls, logits_BxNxV, tkv, tb: int) -> "DecodeState":
    """Step 0's carry after the prompt: every stream generating, buffers empty, on the
    documents' devices (the caches are placed by their maker; the rest on their first axis)."""
    b, n = logits_BxNxV.shape[:2]
    zeros_i = jnp.zeros((b, n), jnp.int32)
    st = cls(i=jnp.zeros((), jnp.int32), logits=logits_BxNxV, tkv=tkv,
             buf=jnp.zeros((b, n, tb), jnp.int32), logp=jnp.zeros((b, n, tb), jnp.float32),
             mask=jnp.zeros((b, n, tb), jnp.int32), valid=jnp.zeros((b, n, tb), jnp.int32),
             phase=zeros_i, close_pos=zeros_i, gen_len=zeros_i, thought_len=zeros_i,
             truncated=jnp.zeros((b, n), bool), s_pred=jnp.zeros((b, n), jnp.float32),
             pred=jnp.full((b, n), -1, jnp.int32), top=jnp.zeros((b, n), jnp.int32))
    return st.replace(**{f.name: on_doc_axis(getattr(st, f.name))
                         for f in dataclasses.fields(st) if f.name not in ("i", "tkv")})


def unrolls_layers(cfg: SamplerConfig) -> bool:
  """Whether the decode loop runs its layers unrolled (cfg.unroll_layers; None: on CPU)."""
  return jax.default_backend() == "cpu" if cfg.unroll_layers is None else cfg.unroll_layers


def stream_layout(cuts_BxK, group_size):
  """Per-stream cut t ([B, N]) with stream n = k * G + g."""
  return jnp.repeat(cuts_BxK, group_size, axis=1)


def prompt_positions(cut_BxN, n_tokens):
  return cut_BxN[..., None] + jnp.arange(n_tokens, dtype=jnp.int32)


def on_doc_axis(x, axis: int = 0):
  """`x` with its document axis split over the mesh's batch axes (data x fsdp) when the trace
  runs under a mesh that has them (jax.set_mesh, as the trainer does), else `x`: the rollout's
  caches and per-stream state stay on their documents' devices instead of being left to the
  partitioner's guess. (Under explicit mesh axes the inputs' shardings already decide.)"""
  mesh = jax.sharding.get_abstract_mesh()
  if (mesh.empty or not {"data", "fsdp"} <= set(mesh.axis_names)
      or jax.sharding.AxisType.Explicit in mesh.axis_types):  # explicit: the inputs' shardings
    return x
  spec = [None] * x.ndim
  spec[axis] = ("data", "fsdp")
  return jax.lax.with_sharding_constraint(x, jax.sharding.PartitionSpec(*spec))


def _decode_caches(model, docs_BxS, cut_BxN, cfg: SamplerConfig, prefix=None):
  """((prefix k, v), prefix mask, empty thought caches, per-layer weights or None) of the decode
  loop: head-major caches (models.transformer.decode_shared), stacked over the layers or, when
  the loop unrolls them, one array per layer (and the weights cast and split once, here). The
  naive form copies the prefix per stream (B*N rows of one stream each)."""
  s, n, c = docs_BxS.shape[1], cut_BxN.shape[1], model.config
  if cfg.naive:
    pk, pv = model.prefix_kv(jnp.repeat(docs_BxS, n, axis=0))
    pmask = (jnp.arange(s)[None, :] < cut_BxN.reshape(-1, 1))[:, None, :]  # [B*N, 1, S]
  else:
    pk, pv = prefix if prefix is not None else model.prefix_kv(docs_BxS)
    pmask = jnp.arange(s)[None, None, :] < cut_BxN[:, :, None]  # [B, N, S]
  unroll = unrolls_layers(cfg)
  rows, per_row = pmask.shape[:2]
  tkv = thought_cache(c.n_layers, rows, per_row, c.n_kv_heads, len(cfg.prompt_ids) + cfg.buffer_len,
                      c.head_dim, pk.dtype, stacked=not unroll)
  pk, pv = decode_layout((pk, pv))
  if unroll:
    pk, pv = ([on_doc_axis(a) for a in per_layer(x)] for x in (pk, pv))
    return (pk, pv), pmask, tuple([on_doc_axis(a) for a in x] for x in tkv), model.layer_weights()
  pk, pv = (on_doc_axis(a, 1) for a in (pk, pv))
  return (pk, pv), pmask, tuple(on_doc_axis(a, 1) for a in tkv), None


def _written_closer(buf_BxNxT, i, gen_len_BxN, closers):
  """(closed, closer length) per stream: whether the tokens written up to step i end with one
  tokenization of </think>, and that tokenization's length (the first that matches)."""
  tb = buf_BxNxT.shape[-1]
  closed = jnp.zeros(gen_len_BxN.shape, bool)
  closer_len = jnp.zeros_like(gen_len_BxN)
  for ids in closers:
    idx = jnp.clip(i - len(ids) + 1 + jnp.arange(len(ids)), 0, tb - 1)
    tail = jnp.take(buf_BxNxT, idx, axis=2)
    hit = (gen_len_BxN >= len(ids)) & jnp.all(tail == jnp.asarray(ids), axis=-1) & ~closed
    closer_len = jnp.where(hit, len(ids), closer_len)
    closed = closed | hit
  return closed, closer_len


def rollout_fn(model, docs_BxS, cuts_BxK, key, cfg: SamplerConfig, prefix=None) -> Rollout:
  """The rollout (no gradient). Pure function of the model's params; jit it (see `rollout`).
  prefix: the documents' (k, v) from `model.prefix_kv(docs_BxS)` when the caller has them (the
  trainer computes them once for the rollout and the update), else computed here. Longer than
  most functions here: the decode step `body` is a closure over the rollout's static shapes,
  caches and settings, so the while_loop carries only the DecodeState."""
  b, k = cuts_BxK.shape
  g = cfg.group_size
  n = k * g
  p_len, m, tb = len(cfg.prompt_ids), len(cfg.close_ids), cfg.buffer_len
  cut = stream_layout(cuts_BxK, g)  # [B, N]
  targets = jnp.take_along_axis(docs_BxS, cuts_BxK, axis=1)
  close = jnp.asarray(cfg.close_ids, jnp.int32)

  (pk, pv), pmask, tkv, weights = _decode_caches(model, docs_BxS, cut, cfg, prefix)
  rows, per_row = pmask.shape[:2]

  def feed(tok_BxNxC, pos_BxNxC, tkv, write_index, filled=None):
    shape = (rows, per_row, tok_BxNxC.shape[-1])
    logits, tkv = model.decode_shared(tok_BxNxC.reshape(shape), pos_BxNxC.reshape(shape),
                                      (pk, pv), pmask, tkv, write_index, filled, weights)
    return logits[:, :, -1].reshape(b, n, -1), tkv

  prompt = jnp.broadcast_to(jnp.asarray(cfg.prompt_ids, jnp.int32), (b, n, p_len))
  logits, tkv = feed(prompt, prompt_positions(cut, p_len), tkv, 0)

  init = DecodeState.start(logits, tkv, tb)

  pred_key = jax.random.split(key)[1]  # RPT's predictions: a stream apart from the thoughts'

  def cond(st):
    return jnp.any(st.phase != PHASE_DONE) & (st.i <= tb)

  def body(st, filled):
    i, phase, close_pos = st.i, st.phase, st.close_pos
    raw = jax.nn.log_softmax(st.logits, axis=-1)
    # 1. streams whose </think> is fully fed score x_t and finish
    scoring = (phase == PHASE_CLOSE) & (close_pos == m)
    s_tgt = jnp.take_along_axis(raw, stream_layout(targets, g)[..., None], -1)[..., 0]
    s_pred = jnp.where(scoring, s_tgt, st.s_pred)
    top = jnp.where(scoring, last_axis_argmax(st.logits), st.top)
    # 2. streams still closing get the next </think> token forced (not a policy action)
    forcing = (phase == PHASE_CLOSE) & (close_pos < m)
    forced_tok = close[jnp.minimum(close_pos, m - 1)]
    # 3. generating streams sample; every closer's first token is banned before min length
    lg = st.logits
    firsts = jnp.asarray(sorted({c[0] for c in cfg.closers}), jnp.int32)
    ban = (st.gen_len < cfg.min_thought_len)[..., None] & jnp.any(
        jnp.arange(lg.shape[-1])[:, None] == firsts, -1)
    tok, tok_logp = sample_logits(jax.random.fold_in(key, i), lg, cfg.temperature, cfg.top_k,
                                  cfg.top_p, ban)
    gen = phase == PHASE_GEN
    if cfg.predict:  # RPT: the scoring step also samples the prediction of x_t
      pred, pred_logp = sample_logits(jax.random.fold_in(pred_key, i), st.logits,
                                      cfg.temperature, cfg.top_k, cfg.top_p)
      tok = jnp.where(scoring, pred, tok)
      st = st.replace(pred=jnp.where(scoring, pred, st.pred))
      tok_logp = jnp.where(scoring, pred_logp, tok_logp)
      gen = gen | scoring
    nxt = jnp.where(gen, tok, jnp.where(forcing, forced_tok, 0))
    write = gen | forcing
    buf = st.buf.at[:, :, i].set(jnp.where(write, nxt, 0), mode="drop")
    logp = st.logp.at[:, :, i].set(jnp.where(gen, tok_logp, 0.0), mode="drop")
    mask = st.mask.at[:, :, i].set(gen.astype(jnp.int32), mode="drop")
    valid = st.valid.at[:, :, i].set(write.astype(jnp.int32), mode="drop")
    gen_len = st.gen_len + (phase == PHASE_GEN)
    closed, closer_len = _written_closer(buf, i, gen_len, cfg.closers)
    closed = closed & (phase == PHASE_GEN)
    hit_limit = (phase == PHASE_GEN) & ~closed & (gen_len >= cfg.max_thought_len)
    thought_len = jnp.where(closed, gen_len - closer_len,
                            jnp.where(hit_limit, gen_len, st.thought_len))
    new_phase = jnp.where(scoring, PHASE_DONE, jnp.where(closed | hit_limit, PHASE_CLOSE, phase))
    new_close = jnp.where(closed, m, jnp.where(hit_limit, 0, close_pos + forcing))
    truncated = st.truncated | hit_limit
    pos = (cut + p_len + i)[..., None]
    logits, tkv = feed(nxt[..., None], pos, st.tkv, p_len + i, filled)
    return DecodeState(i=i + 1, logits=logits, tkv=tkv, buf=buf, logp=logp, mask=mask,
                       valid=valid, phase=new_phase, close_pos=new_close, gen_len=gen_len,
                       truncated=truncated, thought_len=thought_len, s_pred=s_pred, pred=st.pred,
                       top=top)

  # one loop per read span: step i writes cache index p_len + i and reads the keys before it, so
  # a loop whose span is `filled` runs the steps with p_len + i < filled; the last runs the rest
  st, spans = init, cfg.read_spans()
  for filled in spans:
    last = filled == spans[-1]
    st = jax.lax.while_loop(
        cond if last else (lambda st, f=filled: cond(st) & (p_len + st.i < f)),
        functools.partial(body, filled=None if last else filled), st)
  shape4 = (b, k, g, tb)
  return Rollout(tokens=st.buf.reshape(shape4), logp=st.logp.reshape(shape4),
                 mask=st.mask.reshape(shape4), valid=st.valid.reshape(shape4),
                 lengths=st.thought_len.reshape(b, k, g),
                 truncated=st.truncated.reshape(b, k, g), s_pred=st.s_pred.reshape(b, k, g),
                 targets=targets, cuts=cuts_BxK.astype(jnp.int32),
                 prediction=st.pred.reshape(b, k, g),
                 pred_argmax=st.top.reshape(b, k, g))


def chunked_rollout_fn(model, docs_BxS, cuts_BxK, key, cfg: SamplerConfig,
                       chunk: int = 0, prefix=None) -> Rollout:
  """rollout_fn over `chunk` documents at a time (0 or >= B: all at once), one chunk after the
  other in a lax.map, so the KV caches of one chunk are alive at a time. Chunk j holds documents
  j, j + B/chunk, j + 2B/chunk, ...: with the batch sharded over devices in contiguous blocks,
  every device works on every chunk. Chunk j samples with fold_in(key, j); greedy rollouts equal
  the unchunked one exactly. prefix (unchunked only): as for rollout_fn."""
  b = docs_BxS.shape[0]
  if not chunk or chunk >= b:
    return rollout_fn(model, docs_BxS, cuts_BxK, key, cfg, prefix)
  if prefix is not None:
    raise ValueError("a precomputed prefix is for unchunked rollouts (chunk 0)")
  if b % chunk:
    raise ValueError(f"rollout chunk {chunk} does not divide the {b} documents of the batch")
  n = b // chunk

  def split(x):  # [B, ...] -> [n, chunk, ...], chunk j = rows j, j + n, j + 2n, ...
    return jnp.swapaxes(x.reshape(chunk, n, *x.shape[1:]), 0, 1)

  def one(xs):
    j, docs, cuts = xs
    return rollout_fn(model, docs, cuts, jax.random.fold_in(key, j), cfg)

  out = jax.lax.map(one, (jnp.arange(n), split(docs_BxS), split(cuts_BxK)))
  return jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1).reshape(b, *x.shape[2:]), out)


@backend.jit(static_argnames=("graphdef", "cfg"))
def rollout_jit(graphdef, params, docs, cuts, key, cfg):
  """The jitted rollout over split params (one compiled program per graphdef and config)."""
  return rollout_fn(nnx.merge(graphdef, params), docs, cuts, key, cfg)


def rollout(model, docs_BxS, cuts_BxK, key, cfg: SamplerConfig) -> Rollout:
  """Jitted rollout for an NNX model (convenience for notebooks, tests and benchmarks)."""
  graphdef, params = nnx.split(model)
  return rollout_jit(graphdef, params, jnp.asarray(docs_BxS, jnp.int32),
                      jnp.asarray(cuts_BxK, jnp.int32), key, cfg)


def thought_logits(model, docs_BxS, cuts_BxK, thought_tokens_BxKxGxT, cfg: SamplerConfig,
                   prefix=None, with_next: bool = False, hidden: bool = False):
  """Teacher-forced logits over [prompt, thought] of every stream, differentiable.

  Returns logits [B, K, G, T, V] where entry u predicts thought token u; the shared prefix is
  computed once per document (or passed in as `prefix` = (k, v)). with_next: T + 1 entries, the
  last one predicting what follows the whole buffer, so entry n (the thought's valid length,
  closer included) is the scorer's prediction of x_t. hidden: the head's input [B, K, G, T, D]
  instead of the logits (for a head applied in chunks: objective.chunked_policy_logp).
  """
  b, s = docs_BxS.shape
  _, k, g, t = thought_tokens_BxKxGxT.shape
  n, p_len = k * g, len(cfg.prompt_ids)
  cut = stream_layout(cuts_BxK, g)
  pk, pv = prefix if prefix is not None else model.prefix_kv(docs_BxS)
  pmask = jnp.arange(s)[None, None, :] < cut[:, :, None]
  prompt = jnp.broadcast_to(jnp.asarray(cfg.prompt_ids, jnp.int32), (b, n, p_len))
  toks = jnp.concatenate([prompt, thought_tokens_BxKxGxT.reshape(b, n, t)], axis=-1)
  h = model.shared_forward(toks, prompt_positions(cut, p_len + t), (pk, pv), pmask)
  t_out = t + int(with_next)
  # the head only over the entries returned: the prompt's other entries (and the last one
  # without with_next) would cost head rows, and their zero cotangent a padded copy of the
  # logits' gradient, for nothing
  h = h[:, :, p_len - 1:p_len - 1 + t_out].reshape(b, k, g, t_out, -1)
  return h if hidden else model.head(h)
