"""Evaluation: pass@k estimator, answer extraction, problem files, diversity, end to end."""

import itertools
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from flax import nnx

import models
from rlp import evaluate as E
from rlp import sampler as S

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("n,c,k", [(5, 0, 1), (5, 5, 3), (10, 3, 1), (10, 3, 4), (8, 2, 8),
                                   (6, 1, 2), (20, 7, 5)])
def test_pass_at_k_equals_exact_combinatorics(n, c, k):
  # probability that a uniformly drawn k-subset of the n samples holds a correct one
  subsets = list(itertools.combinations(range(n), k))
  exact = sum(any(i < c for i in s) for s in subsets) / len(subsets)
  assert abs(E.pass_at_k(n, c, k) - exact) < 1e-12
  assert abs(E.pass_at_k(n, c, k) - (1 - math.comb(n - c, k) / math.comb(n, k))) < 1e-12


def test_pass_at_k_rejects_bad_input():
  with pytest.raises(E.EvalError, match="at least 8 samples"):
    E.pass_at_k(4, 1, 8)
  with pytest.raises(E.EvalError):
    E.pass_at_k(4, 5, 1)


@pytest.mark.parametrize("text,want", [
    ("so 12 + 3 = 15\n#### 15", "15"),
    ("#### 1,234", "1234"),
    ("The answer is \\boxed{-7}.", "-7"),
    ("costs $3.50 in total", "3.5"),
    ("she ends with 42 apples.", "42"),
    ("about -0.25 meters", "-0.25"),
    ("first 3, then 4, finally 12 dollars", "12"),
    ("#### 7 \n then 99 more text", "7"),
    ("no number here", None),
    ("", None),
])
def test_answer_extraction(text, want):
  assert E.extract_answer(text) == want


def test_answers_match_numerically():
  assert E.answers_match("1234", "1,234") and E.answers_match("3.5", "3.50")
  assert E.answers_match("-7", "-7") and not E.answers_match("7", "-7")
  assert not E.answers_match(None, "3")


def test_problem_file_errors_name_the_line(tmp_path):
  p = tmp_path / "p.jsonl"
  p.write_text('{"question": "1+1?", "answer": "2"}\n{"question": "2+2?"}\n')
  with pytest.raises(E.EvalError, match=r"p.jsonl:2 has no 'answer' field"):
    E.load_problems(str(p))
  p.write_text('{"question": "1+1?", "answer": "2"}\nnot json\n')
  with pytest.raises(E.EvalError, match=r"p.jsonl:2 is not valid JSON"):
    E.load_problems(str(p))
  p.write_text('{"question": "1+1?", "answer": 2}\n')
  assert E.load_problems(str(p)) == [{"question": "1+1?", "answer": "2"}]


def test_diversity_measures():
  same = [[1, 2, 3, 4]] * 3
  varied = [[1, 2, 3, 4], [5, 6, 7, 8], [1, 9, 3, 9]]
  assert E.distinct_n(same, 2) == pytest.approx(3 / 9)
  assert E.distinct_n(varied, 1) > E.distinct_n(same, 1)
  assert E.mean_pairwise_edit(same) == 0.0
  assert E.mean_pairwise_edit([[1, 2, 3], [1, 2, 4]]) == pytest.approx(1 / 3)
  assert E.unigram_entropy(same) == pytest.approx(np.log(4))


def test_tiny_model_end_to_end():
  from models.tokenizer import load_tokenizer
  tok = load_tokenizer("bytes")
  model = models.Transformer(models.ModelConfig(vocab_size=260), rngs=nnx.Rngs(0))
  problems = [{"question": "What is 2 + 3?", "answer": "5"}, {"question": "7 - 1?", "answer": "6"}]
  shots = [{"question": "1 + 1?", "solution": "1 + 1 = 2\n#### 2"}]
  report, examples = E.reasoning_eval(model, tok, problems, shots, samples=4, ks=[1, 2, 4],
                                      max_new_tokens=12)
  for k in ("reasoning/pass@1_greedy", "reasoning/pass@1", "reasoning/pass@4",
            "diversity/distinct_1", "diversity/pairwise_edit", "diversity/token_entropy"):
    assert k in report and 0 <= report[k] <= max(1.0, report[k])
  assert report["reasoning/pass@1"] <= report["reasoning/pass@2"] <= report["reasoning/pass@4"]
  assert len(examples) == 2
  docs = [np.asarray(tok.encode("Question: how many apples are there in the basket today?"))] * 2
  scfg = S.SamplerConfig(group_size=2, max_thought_len=4, prompt_ids=tok.think_open_ids,
                         close_ids=tok.think_close_ids)
  lk = E.thought_likelihood(model, docs, scfg, seq_len=64, positions=2)
  assert np.isfinite(lk["eval/information_gain"])
  assert 0 <= lk["eval/next_token_acc_thought"] <= 1


def test_generate_matches_greedy_with_left_padding():
  from models.tokenizer import load_tokenizer
  tok = load_tokenizer("bytes")
  model = models.Transformer(models.ModelConfig(vocab_size=260), rngs=nnx.Rngs(1))
  prompts = ["a short one", "a much longer prompt here"]
  got = E.generate(model, tok, prompts, 6, temperature=0.0)
  for p, g in zip(prompts, got):
    want = np.asarray(models.greedy_generate(model, tok.encode(p), 6))[0].tolist()
    assert g == want


@pytest.mark.slow
def test_rlp_eval_cli_on_smollm2(tmp_path):
  """A handful of held-out problems on the real model give a valid report (no score asserted)."""
  out = tmp_path / "report.json"
  r = subprocess.run([sys.executable, "-m", "launch.evaluate", "--model=smollm2", "--problems=2",
                      "--samples=2", "--k=1,2", "--max_new_tokens=48", "--likelihood_docs=2",
                      "--seq_len=128", f"--out={out}"], cwd=ROOT, capture_output=True, text=True,
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
