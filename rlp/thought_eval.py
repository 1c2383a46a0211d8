"""Does a thought help, and does its content? The held-out thought eval.

At fixed target positions of held-out documents, G thoughts are sampled with the run's sampler and
x_t is scored after each of them (S_pred), without any thought (S_plain), and after placebo
thoughts at the same positions, scored by the same model:

  empty       <think></think>: nothing inside
  one_token   the real thought's first token only
  random      tokens drawn from the documents' own tokens, as many as the real thought has
  other_doc   the real thoughts sampled for another document (same k-th position of the next one)

S_pred - S_plain (the information gain) mixes what the thought says with how the model predicts
after *any* closed thought; S_pred - S_placebo is what the content adds. Every difference comes
with a 95% bootstrap interval that resamples documents (a document's positions together), so a
gain is read against its noise. Positions are chosen once (`choose`) and passed in, so the models
being compared are scored at the same places; a position set chosen by one model's own lowest
log-probs and then used to subtract that model's S_plain flatters any flatter prediction.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from models import backend
from models import sampling
from rlp import answers
from rlp import batches
from rlp import objective
from rlp import positions as positions_lib
from rlp import sampler
from rlp.schema import PLACEBOS, SELECTIONS

BOOTSTRAP_SAMPLES = 2000


class EvalError(answers.EvalError):
  pass


@dataclasses.dataclass(frozen=True)
class Selection:
  """How positions are chosen: SELECTIONS, `per_doc` per document, t >= min_prefix,
  after `marker_ids` (marker), drawn with `seed` (uniform, marker)."""
  kind: str = "uniform"
  per_doc: int = 2
  min_prefix: int = 8
  marker_ids: tuple[int, ...] | None = None
  seed: int = 0

  def __post_init__(self):
    if self.kind not in SELECTIONS:
      raise EvalError(f"selection must be one of {SELECTIONS} (got {self.kind!r})")
    if self.kind == "marker" and not self.marker_ids:
      raise EvalError("selection 'marker' needs the marker's token ids (a position marker)")
    if self.per_doc < 1:
      raise EvalError(f"positions per document must be >= 1 (got {self.per_doc})")


@dataclasses.dataclass(frozen=True)
class EvalPositions:
  """The positions every model of a comparison is scored at: document `doc[i]` (an index into
  the documents given) at positions t[i] ([D, K]) with targets x_t, and who chose them."""
  doc: np.ndarray  # [D]
  t: np.ndarray  # [D, K]
  targets: np.ndarray  # [D, K]
  selected_by: str
  skipped: int = 0  # documents that could not hold a position

  def to_json(self) -> dict:
    return {"selected_by": self.selected_by, "per_doc": int(self.t.shape[1]),
            "doc": self.doc.tolist(), "t": self.t.tolist(), "targets": self.targets.tolist(),
            "skipped": self.skipped}

  @classmethod
  def from_json(cls, obj: dict, docs, seq_len: int, where: str = "the report") -> "EvalPositions":
    """Positions saved by `to_json` (or written by hand: {"doc": [i, ...], "t": [[t, ...], ...],
    the same number of positions per document; "targets" and "selected_by" optional), checked
    against `docs`: each position must lie inside its document (truncated to seq_len) with a
    token before it, and a given target must be the token there (the same documents, tokenized
    the same way), else an EvalError says so."""
    if isinstance(obj, dict) and isinstance(obj.get("t"), list) and len(
        {len(r) if isinstance(r, list) else -1 for r in obj["t"]}) > 1:
      raise EvalError(f"{where}: \"t\" must hold one list of positions per entry of \"doc\", "
                      "the same number for every document")
    try:
      doc = np.asarray(obj["doc"], np.int64)
      t = np.asarray(obj["t"], np.int64)
    except (KeyError, TypeError, ValueError) as e:
      raise EvalError(f"{where} holds no saved positions ({e}); write them with rlp-eval "
                      "(its report's \"positions\") or as {\"doc\": [...], \"t\": [[...], ...]}"
                      ) from None
    if t.ndim != 2 or len(doc) != len(t) or not len(doc):
      raise EvalError(f"{where}: \"t\" must hold one list of positions per entry of \"doc\", "
                      "the same number for every document")
    rows = []
    for i, row in zip(doc, t):
      d = np.asarray(docs[i])[:seq_len] if 0 <= i < len(docs) else None
      if d is None or row.min() < 1 or row.max() >= len(d):
        raise EvalError(f"{where}: its positions do not fit these documents (document {i} "
                        f"{'is missing' if d is None else 'is shorter, or a position is 0'}); "
                        "evaluate the same source, document count, tokenizer and seq_len")
      rows.append(d[row])
    targets = np.stack(rows).astype(np.int64)
    if "targets" in obj and (np.asarray(obj["targets"], np.int64).shape != targets.shape
                             or (np.asarray(obj["targets"], np.int64) != targets).any()):
      raise EvalError(f"{where}: its positions do not fit these documents (other tokens at the "
                      "saved positions); evaluate the same source, document count, tokenizer and "
                      "seq_len as the report")
    return cls(doc=doc, t=t, targets=targets,
               selected_by=str(obj.get("selected_by", f"positions given in {where}")),
               skipped=int(obj.get("skipped", 0)))

  @property
  def per_doc(self) -> int:
    return int(self.t.shape[1])


def _usable(docs, seq_len: int, sel: Selection) -> tuple[list[int], list]:
  """Indices of the documents that can hold a position, and their marker candidates."""
  keep, cands = [], []
  for i, d in enumerate(docs):
    d = np.asarray(d)[:seq_len]
    cand = None if sel.kind != "marker" else batches.marker_positions(d, sel.marker_ids)
    if len(d) > sel.min_prefix + 1 and (cand is None or (cand >= sel.min_prefix).any()):
      keep.append(i)
      cands.append(cand)
  if not keep:
    raise EvalError(f"no document holds a target position (longer than min_prefix + 1 = "
                    f"{sel.min_prefix + 1} tokens" + (", with the position marker)"
                                                       if sel.kind == "marker" else ")"))
  return keep, cands


@functools.partial(jax.jit, static_argnames=("graphdef", "selection", "k", "min_prefix",
                                             "exclude"))
def _scored(graphdef, params, tokens, lengths, selection, k, min_prefix, exclude):
  return positions_lib.scored_positions(nnx.merge(graphdef, params), tokens, lengths, selection,
                                        k, min_prefix, exclude)[0]


def choose(docs, seq_len: int, sel: Selection, scorer=None, scorer_name: str = "the evaluated "
           "model", exclude: int | None = None, batch_size: int = 4) -> EvalPositions:
  """Positions for the documents that can hold one. uniform / marker: drawn with sel.seed;
  entropy / low_logp: the per_doc highest-entropy / lowest-log-prob tokens under `scorer` (a
  model, named `scorer_name` in `selected_by`)."""
  keep, cands = _usable(docs, seq_len, sel)
  rows = [np.asarray(docs[i])[:seq_len] for i in keep]
  if sel.kind in positions_lib.SCORED:
    if scorer is None:
      raise EvalError(f"selection {sel.kind!r} needs a model to score the positions")
    graphdef, params = nnx.split(scorer)
    ts = []
    for i in range(0, len(rows), batch_size):
      toks, lens = batches.pad_rows(rows[i:i + batch_size], seq_len, batch_size)
      got = to_host(_scored(graphdef, params, jnp.asarray(toks), jnp.asarray(lens), sel.kind,
                               sel.per_doc, sel.min_prefix, exclude))
      ts.extend(np.sort(got, axis=1)[:len(rows[i:i + batch_size])])
    by = f"{sel.kind} under {scorer_name}"
  else:
    rng = np.random.default_rng(sel.seed)
    ts = [batches.choose_positions(len(r), sel.per_doc, sel.min_prefix, rng, c)
          for r, c in zip(rows, cands)]
    by = f"{sel.kind} (seed {sel.seed})"
  t = np.stack(ts).astype(np.int64)
  targets = np.stack([r[row] for r, row in zip(rows, t)]).astype(np.int64)
  return EvalPositions(doc=np.asarray(keep, np.int64), t=t, targets=targets, selected_by=by,
                       skipped=len(docs) - len(keep))


def bootstrap_ci(values_D, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> list[float]:
  """95% percentile interval of the mean of `values_D` (one value per document), resampling
  documents with replacement."""
  v = np.asarray(values_D, np.float64)
  if len(v) < 2:
    return [float(v.mean()), float(v.mean())]
  means = v[np.random.default_rng(seed).integers(0, len(v), (samples, len(v)))].mean(1)
  return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def to_host(x) -> np.ndarray:
  """A writable numpy copy of an array, also one that spans other processes' devices."""
  if getattr(x, "is_fully_addressable", True):
    return np.array(x)
  from jax.experimental import multihost_utils
  return np.array(multihost_utils.process_allgather(x, tiled=True))


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _plain_logits(graphdef, params, tokens):
  return nnx.merge(graphdef, params)(tokens)


@backend.jit(static_argnames=("graphdef", "cfg"))
def score_given(graphdef, params, tokens, cuts, thoughts_BxKxGxT, n_valid_BxKxG, cfg):
  """S_pred of given thoughts, teacher-forced: log p(x_t | x_<t, prompt, thought) where the
  thought buffer's first n_valid tokens (closer included) are the thought; and the argmax there.
  For the rollout's own thoughts this is the rollout's S_pred."""
  model = nnx.merge(graphdef, params)
  h = sampler.thought_logits(model, tokens, cuts, thoughts_BxKxGxT, cfg, with_next=True,
                             hidden=True)
  logits = model.head(jnp.take_along_axis(h, n_valid_BxKxG[..., None, None], 3)[..., 0, :])
  tgt = jnp.broadcast_to(jnp.take_along_axis(tokens, cuts, 1)[..., None], logits.shape[:-1])
  return objective.token_logp(logits, tgt), sampling.last_axis_argmax(logits)


def placebo_thoughts(name: str, tokens_PxGxT, lengths_PxG, cfg: sampler.SamplerConfig,
                     per_doc: int, pool: np.ndarray, rng: np.random.Generator):
  """(buffer [P, G, T], n_valid [P, G]) of placebo `name` for the real thoughts of P positions
  (document-major, per_doc per document): the content then the canonical closer, zero-padded."""
  p, g, width = tokens_PxGxT.shape
  close = np.asarray(cfg.close_ids)
  lengths = np.maximum(lengths_PxG, 1)
  if name == "empty":
    content = [[np.zeros(0, np.int64)] * g for _ in range(p)]
  elif name == "one_token":
    content = [[tokens_PxGxT[i, j, :1] for j in range(g)] for i in range(p)]
  elif name == "random":
    content = [[rng.choice(pool, size=int(lengths[i, j])) for j in range(g)] for i in range(p)]
  elif name == "other_doc":
    src = (np.arange(p) + per_doc) % p  # the same k-th position of the next document
    content = [[tokens_PxGxT[src[i], j, :lengths_PxG[src[i], j]] for j in range(g)]
               for i in range(p)]
  else:
    raise EvalError(f"unknown placebo {name!r}; use one of {PLACEBOS}")
  buf = np.zeros((p, g, width), np.int32)
  n_valid = np.zeros((p, g), np.int32)
  for i in range(p):
    for j in range(g):
      seq = np.concatenate([content[i][j], close])[:width]
      buf[i, j, :len(seq)] = seq
      n_valid[i, j] = len(seq)
  return buf, n_valid


def _placebo_names(placebos, n_docs: int) -> tuple[str, ...]:
  bad = [p for p in placebos if p not in PLACEBOS]
  if bad:
    raise EvalError(f"unknown placebo(s) {bad}; use any of {', '.join(PLACEBOS)}")
  # another document's thought needs another document
  return tuple(p for p in placebos if p != "other_doc" or n_docs > 1)


def thought_likelihood(model, docs, cfg: sampler.SamplerConfig, seq_len: int,
                       at: EvalPositions, seed: int = 0, batch_size: int = 2,
                       baseline_exclude: int | None = None,
                       placebos: Sequence[str] = PLACEBOS, ks: Sequence[int] = (),
                       per_position: bool = False) -> dict:
  """The thought eval at positions `at` (see the module docstring):

    eval/s_pred_mean, eval/s_plain_mean     log p(x_t | x_<t, thought), log p(x_t | x_<t)
    eval/information_gain[_ci]              mean over positions of mean S_pred - S_plain
    eval/gain_over_placebo/<name>[_ci]      mean over positions of mean S_pred - mean S_placebo
    eval/s_placebo/<name>                   mean S_placebo
    eval/next_token_acc_thought / _plain / _placebo/<name>   argmax == x_t
    eval/thought_len_mean, eval/positions, eval/docs_skipped

  (_ci: [low, high], 95%, documents resampled.) With `ks`, each position is also a problem solved
  by the G samples (a thought, then the model's argmax, or RPT's sampled prediction):
  reasoning/pass@k, reasoning/pass@1_no_thought and diversity/* of the thoughts. per_position:
  "per_position" holds one record per position ({"doc", "t", "target", "s_plain", "s_pred": the G
  thoughts', "s_placebo": {name: G values}, "gain"}). baseline_exclude: a dedicated <think> id
  left out of the no-thought distribution. The same seed samples the same thoughts.
  """
  graphdef, params = nnx.split(model)
  rows = [np.asarray(docs[i])[:seq_len] for i in at.doc]
  k = at.per_doc
  names = _placebo_names(placebos, len(rows))
  padded, flat = _score_thoughts(graphdef, params, rows, at, cfg, seq_len, seed, batch_size,
                                  baseline_exclude)
  g = flat["s_pred"].shape[-1]
  placebo = _score_placebos(graphdef, params, padded, flat, names, cfg, k, rows, seed)
  report = _summary(flat, placebo, k, seed)
  report["eval/positions"] = int(flat["s_plain"].size)
  report["eval/docs_skipped"] = at.skipped
  if ks:
    report.update(_pass_report(flat, g, ks))
  if per_position:
    report["per_position"] = [
        {"doc": int(at.doc[p // k]), "t": int(at.t[p // k, p % k]),
         "target": int(at.targets[p // k, p % k]), "s_plain": float(flat["s_plain"][p]),
         "s_pred": [float(v) for v in flat["s_pred"][p]],
         "s_placebo": {nm: [float(v) for v in placebo[nm][0][p]] for nm in names},
         "gain": float(flat["s_pred"][p].mean() - flat["s_plain"][p])}
        for p in range(flat["s_plain"].size)]
  return report


def _score_thoughts(graphdef, params, rows, at: EvalPositions, cfg, seq_len, seed, batch_size,
                    baseline_exclude):
  """(padded, flat): the documents in padded batches [(start, n_real, toks, cuts)], and per
  position (flattened over documents x K) the no-thought score and accuracy, and the G sampled
  thoughts' S_pred, accuracy, tokens, lengths and whether they answer x_t."""
  padded = []
  out = {key: [] for key in ("s_plain", "acc_plain", "s_pred", "acc_t", "tokens", "lengths",
                             "answer")}
  for i in range(0, len(rows), batch_size):
    chunk = rows[i:i + batch_size]
    toks, _ = batches.pad_rows(chunk, seq_len, batch_size)
    cuts = np.concatenate([at.t[i:i + batch_size]] + [at.t[i:i + 1]] * (batch_size - len(chunk)))
    cuts = cuts.astype(np.int32)
    padded.append((i, len(chunk), toks, cuts))
    logits = to_host(_plain_logits(graphdef, params, jnp.asarray(toks)))
    prev = np.take_along_axis(logits, (cuts - 1)[..., None], 1)  # [B, K, V]: predicts x_t
    if baseline_exclude is not None:
      prev[..., baseline_exclude] = -np.inf
    prev = prev - prev.max(-1, keepdims=True)
    prev = prev - np.log(np.exp(prev).sum(-1, keepdims=True))
    tgt = np.take_along_axis(toks, cuts, 1)
    ro = jax.tree.map(to_host, sampler.rollout_jit(graphdef, params, jnp.asarray(toks),
                                                   jnp.asarray(cuts), jax.random.key(seed + i),
                                                   cfg))
    n = len(chunk)
    out["s_plain"].append(np.take_along_axis(prev, tgt[..., None], -1)[..., 0][:n])
    out["acc_plain"].append((prev.argmax(-1) == tgt)[:n])
    out["s_pred"].append(ro.s_pred[:n])
    out["acc_t"].append((ro.pred_argmax == tgt[..., None])[:n])
    out["tokens"].append(ro.tokens[:n])
    out["lengths"].append(ro.lengths[:n])
    out["answer"].append(((ro.prediction if cfg.predict else ro.pred_argmax)
                          == tgt[..., None])[:n])
  return padded, {key: np.concatenate([x.reshape(-1, *x.shape[2:]) for x in v])
                   for key, v in out.items()}


def _score_placebos(graphdef, params, padded, flat, names, cfg, k, rows, seed) -> dict:
  """{name: (S_placebo [P, G], argmax == x_t [P, G])}: every placebo of a batch scored in one
  teacher-forced call, the placebos side by side on the thoughts' axis."""
  if not names:
    return {}
  close = set(cfg.prompt_ids) | {i for c in cfg.closers for i in c}
  pool = np.concatenate(rows)
  pool = pool[~np.isin(pool, list(close))]
  rng = np.random.default_rng(seed + 17)
  built = [placebo_thoughts(nm, flat["tokens"], flat["lengths"], cfg, k, pool, rng)
           for nm in names]
  g = flat["tokens"].shape[1]
  buf = np.concatenate([b for b, _ in built], 1)  # [P, G * len(names), T]
  n_valid = np.concatenate([v for _, v in built], 1)
  s, acc = [], []
  for start, n, toks, cuts in padded:
    b, kk = cuts.shape
    sl = slice(start * k, (start + n) * k)
    pb = np.zeros((b * kk,) + buf.shape[1:], np.int32)
    pv = np.full((b * kk,) + n_valid.shape[1:], 1, np.int32)
    pb[:n * kk], pv[:n * kk] = buf[sl], n_valid[sl]
    lp, top = score_given(graphdef, params, jnp.asarray(toks), jnp.asarray(cuts),
                          jnp.asarray(pb.reshape(b, kk, *buf.shape[1:])),
                          jnp.asarray(pv.reshape(b, kk, -1)), cfg)
    tgt = np.take_along_axis(toks, cuts, 1)[..., None]
    s.append(to_host(lp)[:n].reshape(n * kk, -1))
    acc.append((to_host(top) == tgt)[:n].reshape(n * kk, -1))
  s, acc = np.concatenate(s), np.concatenate(acc)
  return {nm: (s[:, i * g:(i + 1) * g], acc[:, i * g:(i + 1) * g]) for i, nm in enumerate(names)}


def _summary(flat, placebo, k, seed) -> dict:
  real = flat["s_pred"].mean(-1)  # [P]
  plain = flat["s_plain"]
  per_doc = lambda x: x.reshape(-1, k).mean(1)  # noqa: E731  (a document's positions together)
  gain = real - plain
  rep = {"eval/s_pred_mean": float(real.mean()), "eval/s_plain_mean": float(plain.mean()),
         "eval/information_gain": float(gain.mean()),
         "eval/information_gain_ci": bootstrap_ci(per_doc(gain), seed=seed),
         "eval/gain_positive_frac": float((gain > 0).mean()),
         "eval/next_token_acc_thought": float(flat["acc_t"].mean()),
         "eval/next_token_acc_plain": float(flat["acc_plain"].mean()),
         "eval/thought_len_mean": float(flat["lengths"].mean())}
  for nm, (s, acc) in placebo.items():
    diff = real - s.mean(-1)
    rep[f"eval/s_placebo/{nm}"] = float(s.mean())
    rep[f"eval/next_token_acc_placebo/{nm}"] = float(acc.mean())
    rep[f"eval/gain_over_placebo/{nm}"] = float(diff.mean())
    rep[f"eval/gain_over_placebo/{nm}_ci"] = bootstrap_ci(per_doc(diff), seed=seed)
  return rep


def _pass_report(flat, n, ks) -> dict:
  if any(k > n for k in ks):
    raise EvalError(f"pass@{max(ks)} needs at least {max(ks)} thoughts per position (got {n})")
  solved = flat["answer"].sum(-1)
  thoughts = [[flat["tokens"][p, g, :flat["lengths"][p, g]].tolist() for g in range(n)]
              for p in range(len(solved))]
  rep = {"reasoning/problems": int(len(solved)), "reasoning/samples": n,
         "reasoning/pass@1_no_thought": float(flat["acc_plain"].mean())}
  for kk in sorted(set(ks)):
    rep[f"reasoning/pass@{kk}"] = float(np.mean([answers.pass_at_k(n, int(c), kk) for c in solved]))
  rep["diversity/distinct_1"] = float(np.mean([answers.distinct_n(t, 1) for t in thoughts]))
  rep["diversity/distinct_2"] = float(np.mean([answers.distinct_n(t, 2) for t in thoughts]))
  rep["diversity/pairwise_edit"] = float(np.mean([answers.mean_pairwise_edit(t) for t in thoughts]))
  rep["diversity/token_entropy"] = float(np.mean([answers.unigram_entropy(t) for t in thoughts]))
  return rep
