"""The thought eval: positions, placebo thoughts, intervals, against explicit forwards; and what
it can tell apart (a model whose thoughts carry nothing). The other side, a model whose thoughts
carry the answer, is the discovery testbed's figure (bench.testbed): its warm-up alone takes
2.5 min on 2 CPU cores, too long for the suite."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import models
from models.tokenizer import load_tokenizer
from rlp import answers
from rlp import corpora
from rlp import batches
from rlp import sampler
from rlp import thought_eval
from rlp.thought_format import thought_format

TOK = load_tokenizer("bytes")
FMT = thought_format(TOK)
MARKER = tuple(TOK.encode("="))


def _model(seed=3, vocab=260):
  return models.Transformer(models.ModelConfig(vocab_size=vocab), rngs=nnx.Rngs(seed))


def _docs():
  texts = ["1+2+3+4=0\n5+5+5+5=0\n", "9+9+9+9=6\n1+1+1+1=4\n", "2+2+2+2=8\n3+3+3+3=2\n"]
  return [np.asarray(TOK.encode(t)) for t in texts]


def _greedy_cfg(g=2, length=4):
  return sampler.SamplerConfig(group_size=g, max_thought_len=length, temperature=0.0,
                               prompt_ids=FMT.prompt_ids, close_ids=FMT.close_ids)


def _logp_after(model, seq, target):
  """log p(target | seq) by one plain forward."""
  return float(jax.nn.log_softmax(model(jnp.asarray(np.asarray(seq)[None]))[0, -1])[target])


def _greedy_thought(model, prefix, cfg):
  """The greedy thought after prefix + <think> (closer included), by plain forwards."""
  prompt = np.concatenate([prefix, cfg.prompt_ids])
  out = np.asarray(models.greedy_generate(model, prompt, cfg.max_thought_len))[0]
  closes = [i for i in range(len(out)) if out[i] == cfg.close_ids[0]]
  return out[:closes[0] + 1] if closes else np.concatenate([out, cfg.close_ids])


def test_thought_eval_equals_explicit_forwards_and_ignores_padding():
  model, docs, cfg = _model(), _docs(), _greedy_cfg()
  sel = thought_eval.Selection(kind="marker", per_doc=2, min_prefix=4, marker_ids=MARKER)
  at = thought_eval.choose(docs, 32, sel)
  cuts = [batches.marker_positions(d, MARKER) for d in docs]  # both '=' positions of each document
  assert at.t.tolist() == [c.tolist() for c in cuts] and at.selected_by == "marker (seed 0)"
  # three documents in batches of 2: the last batch is padded, and the pad row must not count
  got = thought_eval.thought_likelihood(model, docs, cfg, 32, at, batch_size=2,
                                        per_position=True)
  gains, acc_t, acc_p, empty, one = [], [], [], [], []
  for d, ts in zip(docs, cuts):
    for t in ts:
      plain = _logp_after(model, d[:t], d[t])
      thought = _greedy_thought(model, d[:t], cfg)
      seq = np.concatenate([d[:t], cfg.prompt_ids, thought])
      pred = _logp_after(model, seq, d[t])
      gains.append(pred - plain)
      acc_t.append(int(model(jnp.asarray(seq[None]))[0, -1].argmax()) == d[t])
      empty.append(pred - _logp_after(model, np.concatenate([d[:t], cfg.prompt_ids,
                                                            cfg.close_ids]), d[t]))
      one.append(pred - _logp_after(model, np.concatenate([d[:t], cfg.prompt_ids, thought[:1],
                                                          cfg.close_ids]), d[t]))
      lp = jax.nn.log_softmax(model(jnp.asarray(d[None, :t]))[0, -1])
      acc_p.append(int(lp.argmax()) == d[t])
  assert got["eval/positions"] == 6 and got["eval/docs_skipped"] == 0
  np.testing.assert_allclose(got["eval/information_gain"], np.mean(gains), atol=1e-4)
  np.testing.assert_allclose(got["eval/gain_over_placebo/empty"], np.mean(empty), atol=1e-4)
  np.testing.assert_allclose(got["eval/gain_over_placebo/one_token"], np.mean(one), atol=1e-4)
  np.testing.assert_allclose(got["eval/next_token_acc_plain"], np.mean(acc_p))
  np.testing.assert_allclose(got["eval/next_token_acc_thought"], np.mean(acc_t))
  recs = got["per_position"]
  assert [(r["doc"], r["t"]) for r in recs] == [(i, int(t)) for i, c in enumerate(cuts) for t in c]
  assert [r["target"] for r in recs] == [int(docs[r["doc"]][r["t"]]) for r in recs]
  np.testing.assert_allclose([r["gain"] for r in recs], gains, atol=1e-4)
  # other_doc: position p scored with the thought of the same k-th position of the next document
  s_pred = np.asarray([r["s_pred"] for r in recs])
  other = np.asarray([r["s_placebo"]["other_doc"] for r in recs])
  for p, r in enumerate(recs):
    d, t = docs[r["doc"]], r["t"]
    src = recs[(p + 2) % 6]
    thought = _greedy_thought(model, docs[src["doc"]][:src["t"]], cfg)
    want = _logp_after(model, np.concatenate([d[:t], cfg.prompt_ids, thought]), d[t])
    np.testing.assert_allclose(other[p], want, atol=1e-4)
  np.testing.assert_allclose(got["eval/gain_over_placebo/other_doc"],
                             (s_pred.mean(1) - other.mean(1)).mean(), atol=1e-5)
  # batch size does not change a figure
  one_batch = thought_eval.thought_likelihood(model, docs, cfg, 32, at, batch_size=1)
  for k in ("eval/information_gain", "eval/gain_over_placebo/random", "eval/s_placebo/other_doc"):
    np.testing.assert_allclose(one_batch[k], got[k], atol=1e-5)


def test_teacher_forced_scores_equal_the_rollouts_own():
  """score_given on the rollout's own thoughts (sampled, some closed, some cut) is its S_pred."""
  model, docs = _model(), _docs()
  cfg = sampler.SamplerConfig(group_size=4, max_thought_len=5, temperature=1.0,
                              prompt_ids=FMT.prompt_ids, close_ids=FMT.close_ids)
  toks, _ = batches.pad_rows(docs, 32, 3)
  cuts = np.asarray([[5, 9], [6, 12], [4, 15]], np.int32)
  graphdef, params = nnx.split(model)
  ro = sampler.rollout(model, toks, cuts, jax.random.key(2), cfg)
  lp, top = thought_eval.score_given(graphdef, params, jnp.asarray(toks), jnp.asarray(cuts),
                                     ro.tokens, ro.valid.sum(-1), cfg)
  np.testing.assert_allclose(np.asarray(lp), np.asarray(ro.s_pred), atol=2e-5)
  np.testing.assert_array_equal(np.asarray(top), np.asarray(ro.pred_argmax))


def test_placebo_buffers():
  cfg = _greedy_cfg(length=6)
  real = np.zeros((4, 2, cfg.buffer_len), np.int32)
  lengths = np.asarray([[3, 1], [2, 4], [5, 2], [1, 1]])
  for p in range(4):
    for g in range(2):
      real[p, g, :lengths[p, g]] = 10 * p + g + 1
  pool = np.asarray([48, 49, 50])
  rng = np.random.default_rng(0)
  close = list(cfg.close_ids)
  buf, n = thought_eval.placebo_thoughts("empty", real, lengths, cfg, 2, pool, rng)
  assert (n == len(close)).all() and buf[0, 0, :len(close)].tolist() == close
  buf, n = thought_eval.placebo_thoughts("one_token", real, lengths, cfg, 2, pool, rng)
  assert buf[2, 1, :2].tolist() == [22] + close and (n == 1 + len(close)).all()
  buf, n = thought_eval.placebo_thoughts("random", real, lengths, cfg, 2, pool, rng)
  np.testing.assert_array_equal(n, lengths + len(close))  # as long as the real thought
  assert np.isin(buf[1, 1, :4], pool).all() and buf[1, 1, 4:5].tolist() == close
  buf, n = thought_eval.placebo_thoughts("other_doc", real, lengths, cfg, 2, pool, rng)
  # 2 positions per document: position p takes the thoughts of position p + 2 (wrapping)
  assert buf[0, 0, :6].tolist() == [21] * 5 + close and buf[3, 1, :5].tolist() == [12] * 4 + close
  with pytest.raises(thought_eval.EvalError, match="unknown placebo"):
    thought_eval.placebo_thoughts("silence", real, lengths, cfg, 2, pool, rng)


def test_bootstrap_interval():
  rng = np.random.default_rng(0)
  lo, hi = thought_eval.bootstrap_ci(rng.normal(0.5, 1.0, 400))
  assert lo < 0.5 < hi and abs((hi - lo) - 2 * 1.96 / math.sqrt(400)) < 0.03
  assert thought_eval.bootstrap_ci(np.full(10, 2.0)) == [2.0, 2.0]
  assert thought_eval.bootstrap_ci([1.0, 2.0], seed=1) == thought_eval.bootstrap_ci([1.0, 2.0],
                                                                                   seed=1)


@pytest.mark.parametrize("kind", ["low_logp", "entropy"])
def test_scored_selection_picks_the_scoring_models_extremes(kind):
  """The evaluator's scored positions are the k positions t >= min_prefix with the lowest
  log p(x_t | x_<t) (highest entropy) under the scoring model, computed here by plain forwards."""
  model, docs = _model(), _docs() + [np.asarray(TOK.encode("7+7+7+7=8\n"))]
  sel = thought_eval.Selection(kind=kind, per_doc=3, min_prefix=4)
  at = thought_eval.choose(docs, 32, sel, model, "m", FMT.open_token, batch_size=3)
  assert at.selected_by == f"{kind} under m"
  for i, d in enumerate(docs):
    logits = np.asarray(model(jnp.asarray(d[None])))[0, :-1].astype(np.float64)
    logits[:, FMT.open_token] = -np.inf
    lp = logits - logits.max(-1, keepdims=True)
    lp = lp - np.log(np.exp(lp).sum(-1, keepdims=True))
    ts = np.arange(4, len(d))
    if kind == "low_logp":
      score = -lp[ts - 1, d[ts]]
    else:
      rows = lp[ts - 1]
      score = -np.where(np.isfinite(rows), np.exp(rows) * np.nan_to_num(rows, neginf=0.0),
                        0.0).sum(-1)
    want = np.sort(ts[np.argsort(-score, kind="stable")[:3]])
    assert at.t[i].tolist() == want.tolist(), (i, at.t[i], want)
  with pytest.raises(thought_eval.EvalError, match="needs a model"):
    thought_eval.choose(docs, 32, sel)


def test_saved_positions_round_trip_and_refuse_other_documents():
  docs = _docs()
  at = thought_eval.choose(docs, 32, thought_eval.Selection(per_doc=2, min_prefix=4, seed=5))
  back = thought_eval.EvalPositions.from_json(at.to_json(), docs, 32)
  assert back.t.tolist() == at.t.tolist() and back.selected_by == "uniform (seed 5)"
  other = [np.asarray(TOK.encode("abcdefghijklmnopqrstuvwxyz"))] * 3
  with pytest.raises(thought_eval.EvalError, match="do not fit these documents"):
    thought_eval.EvalPositions.from_json(at.to_json(), other, 32)
  with pytest.raises(thought_eval.EvalError, match="do not fit"):
    thought_eval.EvalPositions.from_json(at.to_json(), docs[:1], 32)
  with pytest.raises(thought_eval.EvalError, match="no saved positions"):
    thought_eval.EvalPositions.from_json({}, docs, 32)
  # written by hand: targets and selected_by are optional; ragged or out-of-range ones refused
  mine = thought_eval.EvalPositions.from_json({"doc": [2, 0], "t": [[5], [9]]}, docs, 32, "f")
  assert mine.targets.tolist() == [[docs[2][5]], [docs[0][9]]] and "given in f" in mine.selected_by
  with pytest.raises(thought_eval.EvalError, match="same number for every document"):
    thought_eval.EvalPositions.from_json({"doc": [0, 1], "t": [[5], [6, 7]]}, docs, 32)
  with pytest.raises(thought_eval.EvalError, match="do not fit"):
    thought_eval.EvalPositions.from_json({"doc": [0], "t": [[0]]}, docs, 32)


def test_a_model_whose_thoughts_carry_nothing():
  """A random-init model's thoughts say nothing about x_t. Scored at its own least likely tokens,
  its raw gain reads positive (the lowest no-thought log-probs regress towards the mean after any
  change of context), with an interval above 0; against another document's thought at the same
  positions the gain's interval covers 0, and at uniform positions the raw gain's does too."""
  model = models.Transformer(models.ModelConfig(vocab_size=260, d_model=64, n_layers=2,
                                                n_heads=4, n_kv_heads=2, head_dim=16, d_ff=128),
                             rngs=nnx.Rngs(0))
  docs = [np.asarray(TOK.encode(t)) for t in corpora.toy_documents("eval", 24)]
  cfg = sampler.SamplerConfig(group_size=4, max_thought_len=6, temperature=1.0,
                              prompt_ids=FMT.prompt_ids, close_ids=FMT.close_ids)
  own = thought_eval.choose(docs, 64, thought_eval.Selection("low_logp", 2, 4), model, "itself",
                            FMT.open_token)
  rep = thought_eval.thought_likelihood(model, docs, cfg, 64, own, batch_size=8,
                                        baseline_exclude=FMT.open_token)
  assert rep["eval/information_gain_ci"][0] > 0, rep["eval/information_gain_ci"]
  lo, hi = rep["eval/gain_over_placebo/other_doc_ci"]
  assert lo < 0 < hi, (lo, hi)
  uniform = thought_eval.choose(docs, 64, thought_eval.Selection("uniform", 2, 4))
  rep = thought_eval.thought_likelihood(model, docs, cfg, 64, uniform, batch_size=8,
                                        baseline_exclude=FMT.open_token)
  lo, hi = rep["eval/information_gain_ci"]
  assert lo < 0 < hi, (lo, hi)


def test_pass_at_k_counts_each_positions_samples(monkeypatch):
  """pass@k over training: every held-out position is a problem, its n thoughts the samples; the
  figures equal the unbiased estimator applied by hand to the rollouts the eval drew (pad rows of
  a short last batch excluded), pass@1 equals the accuracy with a thought, and k > n is refused."""
  # a small vocabulary: an untrained model's answer after a thought is right now and then, so
  # positions have counts between 0 and n
  model = models.Transformer(models.ModelConfig(vocab_size=8), rngs=nnx.Rngs(5))
  docs = [np.random.default_rng(i).integers(2, 8, size=20) for i in range(3)]
  scfg = sampler.SamplerConfig(group_size=6, max_thought_len=4, temperature=1.0,
                               prompt_ids=(0,), close_ids=(1,))
  seen = []
  real = sampler.rollout_jit

  def recording(graphdef, params, tokens, cuts, key, cfg):
    ro = real(graphdef, params, tokens, cuts, key, cfg)
    seen.append((np.asarray(tokens), np.asarray(cuts), jax.tree.map(np.asarray, ro)))
    return ro
  monkeypatch.setattr(sampler, "rollout_jit", recording)
  at = thought_eval.choose(docs, 32, thought_eval.Selection(per_doc=3, min_prefix=4))
  kw = dict(seq_len=32, at=at, batch_size=2, placebos=())
  got = thought_eval.thought_likelihood(model, docs, scfg, ks=(1, 3, 6), **kw)
  counts, div = [], []
  for b_idx, (toks, cuts, ro) in enumerate(seen):
    n_real = 2 if b_idx == 0 else 1  # three documents in batches of two
    tgt = np.take_along_axis(toks, cuts, 1)
    for b in range(n_real):
      for k in range(cuts.shape[1]):
        counts.append(int((ro.pred_argmax[b, k] == tgt[b, k]).sum()))
        div.append([ro.tokens[b, k, g, :ro.lengths[b, k, g]].tolist() for g in range(6)])
  assert got["reasoning/problems"] == len(counts) == 9 and got["reasoning/samples"] == 6
  assert any(0 < c < 6 for c in counts), counts  # some position tells the k apart

  def by_hand(c, k, n=6):
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)
  for k in (1, 3, 6):
    np.testing.assert_allclose(got[f"reasoning/pass@{k}"], np.mean([by_hand(c, k) for c in counts]))
  assert got["reasoning/pass@6"] == np.mean([c > 0 for c in counts])
  np.testing.assert_allclose(got["reasoning/pass@1"], got["eval/next_token_acc_thought"])
  np.testing.assert_allclose(got["diversity/distinct_1"],
                             np.mean([answers.distinct_n(t, 1) for t in div]))
  np.testing.assert_allclose(got["diversity/pairwise_edit"],
                             np.mean([answers.mean_pairwise_edit(t) for t in div]))
  assert 0 < got["diversity/distinct_1"] <= 1  # temperature 1: the six thoughts differ
  with pytest.raises(thought_eval.EvalError, match="pass@8 needs at least 8"):
    thought_eval.thought_likelihood(model, docs, scfg, ks=(1, 8), **kw)
  plain = thought_eval.thought_likelihood(model, docs, scfg, **kw)
  assert not any(k.startswith(("reasoning/", "diversity/")) for k in plain)

