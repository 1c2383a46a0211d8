"""Evaluation: pass@k estimator, answer extraction, problem files, diversity, end to end."""

import itertools
import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import models
from rlp import evaluate
from rlp import sampler

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("n,c,k", [(5, 0, 1), (5, 5, 3), (10, 3, 1), (10, 3, 4), (8, 2, 8),
                                   (6, 1, 2), (20, 7, 5)])
def test_pass_at_k_equals_exact_combinatorics(n, c, k):
  # probability that a uniformly drawn k-subset of the n samples holds a correct one
  subsets = list(itertools.combinations(range(n), k))
  exact = sum(any(i < c for i in s) for s in subsets) / len(subsets)
  assert abs(evaluate.pass_at_k(n, c, k) - exact) < 1e-12
  assert abs(evaluate.pass_at_k(n, c, k) - (1 - math.comb(n - c, k) / math.comb(n, k))) < 1e-12


def test_pass_at_k_rejects_bad_input():
  with pytest.raises(evaluate.EvalError, match="at least 8 samples"):
    evaluate.pass_at_k(4, 1, 8)
  with pytest.raises(evaluate.EvalError):
    evaluate.pass_at_k(4, 5, 1)


@pytest.mark.parametrize("text,want,fallback", [
    # explicit forms: what counts by default
    ("so 12 + 3 = 15\n#### 15", "15", "15"),
    ("#### 1,234", "1234", "1234"),
    ("#### -5", "-5", "-5"),
    ("The answer is \\boxed{-7}.", "-7", "-7"),
    ("The answer is 5. Then 2019 was a year", "5", "5"),
    ("so the final answer is: $3.50", "3.5", "3.5"),
    ("#### 7 \n then 99 more text", "7", "7"),
    # no explicit form: nothing by default, the last number only with the fallback
    ("costs $3.50 in total", None, "3.5"),
    ("she ends with 42 apples.", None, "42"),
    ("about -0.25 meters", None, "-0.25"),
    ("first 3, then 4, finally 12 dollars", None, "12"),
    ("12 - 4", None, "4"),  # an expression, not the number -4
    ("12-4", None, "4"),
    ("no number here", None, None),
    ("", None, None),
])
def test_answer_extraction(text, want, fallback):
  assert evaluate.extract_answer(text) == want
  assert evaluate.extract_answer(text, fallback=True) == fallback


def test_completion_stops_at_the_first_eos():
  from models.tokenizer import load_tokenizer
  tok = load_tokenizer("bytes")
  ids = tok.encode("The answer is 5.") + [tok.eos_id] + tok.encode(" 2019 was a year")
  text = evaluate._completion(tok, ids)
  assert text == "The answer is 5." and evaluate.extract_answer(text) == "5"
  assert evaluate._completion(tok, tok.encode("#### 3\nQuestion: next")) == "#### 3"


def test_answers_match_numerically():
  assert evaluate.answers_match("1234", "1,234") and evaluate.answers_match("3.5", "3.50")
  assert evaluate.answers_match("-7", "-7") and not evaluate.answers_match("7", "-7")
  assert not evaluate.answers_match(None, "3")


def test_problem_file_errors_name_the_line(tmp_path):
  p = tmp_path / "p.jsonl"
  p.write_text('{"question": "1+1?", "answer": "2"}\n{"question": "2+2?"}\n')
  with pytest.raises(evaluate.EvalError, match=r"p.jsonl:2 has no 'answer' field"):
    evaluate.load_problems(str(p))
  p.write_text('{"question": "1+1?", "answer": "2"}\nnot json\n')
  with pytest.raises(evaluate.EvalError, match=r"p.jsonl:2 is not valid JSON"):
    evaluate.load_problems(str(p))
  p.write_text('{"question": "1+1?", "answer": 2}\n')
  assert evaluate.load_problems(str(p)) == [{"question": "1+1?", "answer": "2"}]


def test_diversity_measures():
  same = [[1, 2, 3, 4]] * 3
  varied = [[1, 2, 3, 4], [5, 6, 7, 8], [1, 9, 3, 9]]
  assert evaluate.distinct_n(same, 2) == pytest.approx(3 / 9)
  assert evaluate.distinct_n(varied, 1) > evaluate.distinct_n(same, 1)
  assert evaluate.mean_pairwise_edit(same) == 0.0
  assert evaluate.mean_pairwise_edit([[1, 2, 3], [1, 2, 4]]) == pytest.approx(1 / 3)
  assert evaluate.unigram_entropy(same) == pytest.approx(np.log(4))


def test_tiny_model_end_to_end():
  from models.tokenizer import load_tokenizer
  tok = load_tokenizer("bytes")
  model = models.Transformer(models.ModelConfig(vocab_size=260), rngs=nnx.Rngs(0))
  problems = [{"question": "What is 2 + 3?", "answer": "5"}, {"question": "7 - 1?", "answer": "6"}]
  shots = [{"question": "1 + 1?", "solution": "1 + 1 = 2\n#### 2"}]
  report, examples = evaluate.reasoning_eval(model, tok, problems, shots, samples=4, ks=[1, 2, 4],
                                             max_new_tokens=12, fallback=True)
  for k in ("reasoning/pass@1_greedy", "reasoning/pass@1", "reasoning/pass@4",
            "reasoning_fallback/pass@1_greedy", "reasoning_fallback/pass@4",
            "diversity/distinct_1", "diversity/distinct_2"):
    assert 0.0 <= report[k] <= 1.0, k
  # a random byte model writes no explicit answer: strict scores are exactly 0
  assert report["reasoning/pass@1_greedy"] == 0.0 and report["reasoning/pass@4"] == 0.0
  assert report["reasoning_fallback/pass@4"] >= report["reasoning/pass@4"]
  assert report["diversity/pairwise_edit"] >= 0 and np.isfinite(report["diversity/token_entropy"])
  assert report["reasoning/pass@1"] <= report["reasoning/pass@2"] <= report["reasoning/pass@4"]
  assert len(examples) == 2
  strict, _ = evaluate.reasoning_eval(model, tok, problems, shots, samples=4, ks=[1], max_new_tokens=12)
  assert not any(k.startswith("reasoning_fallback/") for k in strict)


def _explicit_thought_eval(model, docs, scfg, cuts):
  """Per-position information gains (document order) and mean accuracies by plain full forwards,
  one sequence at a time (greedy)."""
  gains, acc_t, acc_p = [], [], []
  for d, ts in zip(docs, cuts):
    for t in ts:
      plain = jax.nn.log_softmax(model(jnp.asarray(d[None, :t]))[0, -1])
      prompt = np.concatenate([d[:t], scfg.prompt_ids])
      thought = np.asarray(models.greedy_generate(model, prompt, scfg.max_thought_len))[0]
      closes = [i for i in range(len(thought)) if thought[i] == scfg.close_ids[0]]
      thought = thought[:closes[0] + 1] if closes else np.concatenate(
          [thought, scfg.close_ids])
      lp = jax.nn.log_softmax(model(jnp.asarray(np.concatenate([prompt, thought])[None]))[0, -1])
      gains.append(float(lp[d[t]] - plain[d[t]]))
      acc_t.append(int(lp.argmax()) == d[t])
      acc_p.append(int(plain.argmax()) == d[t])
  return np.asarray(gains), np.mean(acc_t), np.mean(acc_p)


def test_thought_likelihood_equals_explicit_forwards_and_ignores_padding():
  from models.tokenizer import load_tokenizer
  from rlp import data
  tok = load_tokenizer("bytes")
  model = models.Transformer(models.ModelConfig(vocab_size=260), rngs=nnx.Rngs(3))
  texts = ["1+2+3+4=0\n5+5+5+5=0\n", "9+9+9+9=6\n1+1+1+1=4\n", "2+2+2+2=8\n3+3+3+3=2\n"]
  docs = [np.asarray(tok.encode(t)) for t in texts]
  scfg = sampler.SamplerConfig(group_size=2, max_thought_len=4, temperature=0.0,
                               prompt_ids=(256,), close_ids=(257,))
  marker = tok.encode("=")
  # three documents in batches of 2: the last batch is padded, and the pad row must not count
  got = evaluate.thought_likelihood(model, docs, scfg, seq_len=32, positions=2, min_prefix=4,
                                    batch_size=2, selection="marker", marker_ids=marker,
                                    per_position=True)
  cuts = [data.marker_positions(d, marker) for d in docs]  # both '=' positions of each document
  gains, acc_t, acc_p = _explicit_thought_eval(model, docs, scfg, cuts)
  assert got["eval/positions"] == 6
  np.testing.assert_allclose(got["eval/information_gain"], gains.mean(), atol=1e-4)
  # the per-position records: each document's positions in order, its token, the same gains
  recs = got["per_position"]
  assert [(r["doc"], r["t"]) for r in recs] == [(i, int(t)) for i, c in enumerate(cuts) for t in c]
  assert [r["target"] for r in recs] == [int(docs[r["doc"]][r["t"]]) for r in recs]
  np.testing.assert_allclose([r["gain"] for r in recs], gains, atol=1e-4)
  np.testing.assert_allclose([np.mean(r["s_pred"]) - r["s_plain"] for r in recs], gains, atol=1e-4)
  assert all(len(r["s_pred"]) == scfg.group_size for r in recs)
  # a skipped document (no '=' after min_prefix) keeps the others' indices into `docs`
  skip = evaluate.thought_likelihood(model, [np.asarray(tok.encode("1+1=2"))] + docs, scfg,
                                     seq_len=32, positions=2, min_prefix=4, batch_size=2,
                                     selection="marker", marker_ids=marker, per_position=True)
  assert skip["eval/docs_skipped"] == 1
  assert [(r["doc"] - 1, r["t"]) for r in skip["per_position"]] == [(r["doc"], r["t"]) for r in recs]
  np.testing.assert_allclose(got["eval/next_token_acc_thought"], acc_t)
  np.testing.assert_allclose(got["eval/next_token_acc_plain"], acc_p)
  one = evaluate.thought_likelihood(model, docs, scfg, seq_len=32, positions=2, min_prefix=4,
                                    batch_size=1, selection="marker", marker_ids=marker)
  np.testing.assert_allclose(one["eval/information_gain"], got["eval/information_gain"], atol=1e-5)
  with pytest.raises(evaluate.EvalError, match="no document"):
    evaluate.thought_likelihood(model, docs, scfg, seq_len=32, min_prefix=4, selection="marker",
                                marker_ids=tok.encode("#"))


def test_thought_pass_at_k_counts_each_positions_samples(monkeypatch):
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
  real = evaluate._rollout

  def recording(graphdef, params, tokens, cuts, key, cfg):
    ro = real(graphdef, params, tokens, cuts, key, cfg)
    seen.append((np.asarray(tokens), np.asarray(cuts), jax.tree.map(np.asarray, ro)))
    return ro
  monkeypatch.setattr(evaluate, "_rollout", recording)
  kw = dict(seq_len=32, positions=3, min_prefix=4, batch_size=2)
  got = evaluate.thought_likelihood(model, docs, scfg, ks=(1, 3, 6), **kw)
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
  np.testing.assert_allclose(got["diversity/distinct_1"], np.mean([evaluate.distinct_n(t, 1) for t in div]))
  np.testing.assert_allclose(got["diversity/pairwise_edit"],
                             np.mean([evaluate.mean_pairwise_edit(t) for t in div]))
  assert 0 < got["diversity/distinct_1"] <= 1  # temperature 1: the six thoughts differ
  with pytest.raises(evaluate.EvalError, match="pass@8 needs at least 8"):
    evaluate.thought_likelihood(model, docs, scfg, ks=(1, 8), **kw)
  plain = evaluate.thought_likelihood(model, docs, scfg, **kw)
  assert not any(k.startswith(("reasoning/", "diversity/")) for k in plain)


def test_generate_matches_greedy_with_left_padding():
  from models.tokenizer import load_tokenizer
  tok = load_tokenizer("bytes")
  model = models.Transformer(models.ModelConfig(vocab_size=260), rngs=nnx.Rngs(1))
  prompts = ["a short one", "a much longer prompt here"]
  got = evaluate.generate(model, tok, prompts, 6, temperature=0.0)
  for p, g in zip(prompts, got):
    want = np.asarray(models.greedy_generate(model, tok.encode(p), 6))[0].tolist()
    assert g == want


@pytest.mark.slow
def test_rlp_eval_cli_on_smollm2(tmp_path, full_optimization):
  """A handful of held-out problems on the real model give a valid report (no score asserted)."""
  out = tmp_path / "report.json"
  r = subprocess.run([sys.executable, "-m", "launch.evaluate", "--model=smollm2", "--problems=2",
                      "--samples=2", "--k=1,2", "--max_new_tokens=16", "--likelihood_docs=2",
                      "--seq_len=128", "--positions=1", "--group=2", "--thought_len=8",
                      f"--out={out}"], cwd=ROOT, capture_output=True, text=True,
                     timeout=900)
  assert r.returncode == 0, r.stderr[-3000:]
  rep = json.loads(out.read_text())
  for k in ("eval/nll", "eval/information_gain", "reasoning/pass@1_greedy", "reasoning/pass@2",
            "diversity/distinct_2"):
    assert k in rep and np.isfinite(rep[k])
  assert rep["eval/nll"] < 5  # SmolLM2 models this text
  r = subprocess.run([sys.executable, "-m", "launch.evaluate", "--model=smollm2",
                      f"--out={out}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert r.returncode == 2 and "exists" in r.stderr
  png = tmp_path / "pk.png"
  r = subprocess.run([sys.executable, "-m", "launch.plot", str(out), str(out), f"--out={png}"],
                     cwd=ROOT, capture_output=True, text=True)
  assert r.returncode == 0 and png.exists()


def test_rlp_eval_on_a_run_uses_its_settings_and_any_source(tmp_path):
  """rlp-eval on a run's workdir: the thought eval takes the run's sampler, template and position
  selection; --likelihood_source takes any source the trainer takes (here a JSONL file)."""
  from configs import tiny
  from rlp import loop
  c = tiny.get_config()
  c.train.steps, c.train.progress, c.train.plot, c.train.eval_docs = 1, False, False, 0
  c.rlp.template, c.rlp.group_size, c.rlp.max_thought_len = "hm ", 3, 5
  c.data.selection, c.data.position_marker, c.data.min_prefix = "marker", ":", 4
  c.mesh.data = 1
  wd = str(tmp_path / "run")
  loop.train(c, wd, log=lambda m: None)
  docs = tmp_path / "unseen.jsonl"
  docs.write_text("".join(json.dumps({"text": f"Sum: {a}+{b}+1+1={(a + b + 2) % 10}\n"}) + "\n"
                          for a in range(3) for b in range(3)))
  out = tmp_path / "report.json"
  r = subprocess.run([sys.executable, "-m", "launch.evaluate", f"--model={wd}", "--problems=0",
                      f"--likelihood_source=jsonl:{docs}", "--likelihood_docs=6", "--positions=1",
                      "--per_position", f"--out={out}"], cwd=ROOT, capture_output=True, text=True,
                     timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  rep = json.loads(out.read_text())
  # one record per position, as text too: here the token after "Sum:" of each document
  assert [x["doc"] for x in rep["per_position"]] == list(range(6))
  assert all(x["context"].endswith("Sum:") and x["target_text"] == " " for x in rep["per_position"])
  assert "per_position" not in json.loads(r.stdout.strip().splitlines()[-2])  # not on the console
  assert rep["likelihood_source"] == f"jsonl:{docs}"
  assert rep["thought_eval"]["template"] == "hm " and rep["thought_eval"]["group_size"] == 3
  assert rep["thought_eval"]["max_thought_len"] == 5
  assert rep["thought_eval"]["selection"] == "marker"
  assert rep["eval/positions"] == 6 and np.isfinite(rep["eval/information_gain"])
  r = subprocess.run([sys.executable, "-m", "launch.evaluate", f"--model={wd}", "--problems=0",
                      "--likelihood_source=jsonl:/nonexistent.jsonl", f"--out={tmp_path}/x.json"],
                     cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert r.returncode == 2 and "no such file" in r.stderr
  # without --out the report goes under the workdir; a second eval of the same step (other
  # settings) takes the next free name and leaves the first report as it was
  reports = []
  for selection in ("marker", "uniform"):
    r = subprocess.run([sys.executable, "-m", "launch.evaluate", f"--model={wd}", "--problems=0",
                        f"--likelihood_source=jsonl:{docs}", "--likelihood_docs=2",
                        "--positions=1", f"--selection={selection}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    reports.append(r.stdout.strip().splitlines()[-1])
  assert reports == [os.path.join(wd, "eval", name) for name in ("step-1.json", "step-1-2.json")]
  assert [json.load(open(p))["thought_eval"]["selection"] for p in reports] == ["marker", "uniform"]


def test_default_report_path_keeps_earlier_reports_unless_told(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # a model that is not a run reports to ./eval_report.json
  wd, desc = str(tmp_path), {"kind": "checkpoint", "step": 7}
  first = os.path.join(wd, "eval", "step-7.json")
  assert evaluate.default_report_path(wd, desc) == first
  os.makedirs(os.path.dirname(first))
  open(first, "w").close()
  assert evaluate.default_report_path(wd, desc) == os.path.join(wd, "eval", "step-7-2.json")
  open(os.path.join(wd, "eval", "step-7-2.json"), "w").close()
  assert evaluate.default_report_path(wd, desc) == os.path.join(wd, "eval", "step-7-3.json")
  assert evaluate.default_report_path(wd, desc, overwrite=True) == first  # --overwrite replaces it
  assert evaluate.default_report_path(wd, {"kind": "gguf", "step": None}) == "eval_report.json"
