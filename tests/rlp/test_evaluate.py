"""Evaluation: few-shot generation and answers, held-out NLL, the rlp-eval CLI, report paths."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import models
from rlp import answers
from rlp import evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_completion_stops_at_the_first_eos():
  from models.tokenizer import load_tokenizer
  tok = load_tokenizer("bytes")
  ids = tok.encode("The answer is 5.") + [tok.eos_id] + tok.encode(" 2019 was a year")
  text = evaluate._completion(tok, ids)
  assert text == "The answer is 5." and answers.extract_answer(text) == "5"
  assert evaluate._completion(tok, tok.encode("#### 3\nQuestion: next")) == "#### 3"


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
  # diversity: each problem's sampled answers (drawn here with the eval's seeds), averaged
  div = {"distinct_1": [], "distinct_2": [], "pairwise_edit": [], "token_entropy": []}
  for n, p in enumerate(problems):
    outs = evaluate.generate(model, tok, [answers.few_shot_prompt(p["question"], shots)] * 4, 12,
                             0.7, seed=n)
    toks = [tok.encode(evaluate._completion(tok, o)) for o in outs]
    div["distinct_1"].append(answers.distinct_n(toks, 1))
    div["distinct_2"].append(answers.distinct_n(toks, 2))
    div["pairwise_edit"].append(answers.mean_pairwise_edit(toks))
    div["token_entropy"].append(answers.unigram_entropy(toks))
  for k, v in div.items():
    np.testing.assert_allclose(report[f"diversity/{k}"], np.mean(v), rtol=1e-6, err_msg=k)
  assert report["diversity/pairwise_edit"] > 0  # temperature 0.7: the four answers differ
  assert report["reasoning/pass@1"] <= report["reasoning/pass@2"] <= report["reasoning/pass@4"]
  assert len(examples) == 2
  strict, _ = evaluate.reasoning_eval(model, tok, problems, shots, samples=4, ks=[1], max_new_tokens=12)
  assert not any(k.startswith("reasoning_fallback/") for k in strict)


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
def test_rlp_eval_cli_on_smollm2(tmp_path, full_optimization, smollm2):
  """rlp-eval on the real model: its all-token NLL and each position's no-thought log-prob equal
  explicit forwards of the model in this process; the gain is the mean of the positions'; the
  report holds the process's peak memory; a second run into the same --out is refused."""
  model, tok, _ = smollm2
  out = tmp_path / "report.json"
  r = subprocess.run([sys.executable, "-m", "launch.evaluate", "--model=smollm2", "--problems=2",
                      "--samples=2", "--k=1,2", "--max_new_tokens=16", "--likelihood_docs=2",
                      "--seq_len=128", "--positions=1", "--group=2", "--thought_len=8",
                      "--per_position", f"--out={out}"], cwd=ROOT, capture_output=True,
                     text=True, timeout=900)
  assert r.returncode == 0, r.stderr[-3000:]
  rep = json.loads(out.read_text())
  from rlp import data
  docs_ds, _ = data.open_documents("reasoning:eval", tok, num_docs=2)
  docs = [np.asarray(docs_ds[i])[:128] for i in range(2)]
  nll, count, s_plain = 0.0, 0, {}
  for i, d in enumerate(docs):
    lp = np.asarray(jax.nn.log_softmax(model(jnp.asarray(d[None]))[0].astype(jnp.float32)))
    nll -= float(lp[np.arange(len(d) - 1), d[1:]].sum())
    count += len(d) - 1
    s_plain.update({(i, t): float(lp[t - 1, d[t]]) for t in range(1, len(d))})
  np.testing.assert_allclose(rep["eval/nll"], nll / count, rtol=1e-4)
  recs = rep["per_position"]
  assert len(recs) == 2
  for rec in recs:
    np.testing.assert_allclose(rec["s_plain"], s_plain[(rec["doc"], rec["t"])], atol=2e-3)
  np.testing.assert_allclose(rep["eval/information_gain"], np.mean([x["gain"] for x in recs]),
                             atol=1e-6)
  assert 0 <= rep["reasoning/pass@1"] <= rep["reasoning/pass@2"] <= 1
  assert 0 < rep["diversity/distinct_2"] <= 1
  # the process's peak resident memory: at least SmolLM2's 0.5 GiB of f32 weights
  assert 0.5 < rep["host_rss_peak_gib"] < 64, rep["host_rss_peak_gib"]
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
  # the positions are saved with who chose them; every placebo is scored, with an interval
  assert rep["positions"]["selected_by"] == "marker (seed 0)"
  assert rep["positions"]["t"] == [[x["t"]] for x in rep["per_position"]]
  for name in ("empty", "one_token", "random", "other_doc"):
    lo, hi = rep[f"eval/gain_over_placebo/{name}_ci"]
    assert lo <= rep[f"eval/gain_over_placebo/{name}"] <= hi
    assert len(rep["per_position"][0]["s_placebo"][name]) == 3
  # compare: the run twice at the report's positions, one table; the same model with the same
  # seed at the same positions gives the single eval's figures and a zero best-mode difference
  table = tmp_path / "cmp.json"
  r = subprocess.run([sys.executable, "-m", "launch.evaluate", "compare", wd, wd,
                      f"--likelihood_source=jsonl:{docs}", "--likelihood_docs=6",
                      f"--positions_from={out}", f"--out={table}"], cwd=ROOT,
                     capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  got = json.loads(table.read_text())
  assert got["positions"]["t"] == rep["positions"]["t"]
  assert "from " + str(out) in got["positions"]["selected_by"]
  for m in got["models"]:
    for k in ("eval/information_gain", "eval/gain_over_placebo/random", "eval/nll"):
      np.testing.assert_allclose(m[k], rep[k], rtol=1e-5)
  assert (tmp_path / "cmp.md").read_text().count(f"| {wd} |") == 2 and "| +0.00 [+0.00, +0.00] |" in got["table"]
  # a scored selection on a run is made by the model the run started from, and says so
  r = subprocess.run([sys.executable, "-m", "launch.evaluate", f"--model={wd}", "--problems=0",
                      f"--likelihood_source=jsonl:{docs}", "--likelihood_docs=6",
                      "--selection=low_logp", "--placebos=none", f"--out={tmp_path}/low.json"],
                     cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  low = json.loads((tmp_path / "low.json").read_text())
  assert low["positions"]["selected_by"] == "low_logp under the run's starting model (random, seed 0)"
  assert not any(k.startswith("eval/gain_over_placebo") for k in low)
  r = subprocess.run([sys.executable, "-m", "launch.evaluate", f"--model={wd}", "--problems=0",
                      "--likelihood_source=toy:eval", f"--positions_from={out}",
                      f"--out={tmp_path}/y.json"], cwd=ROOT, capture_output=True, text=True,
                     timeout=600)
  assert r.returncode == 2 and f"--likelihood_source=jsonl:{docs}" in r.stderr
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
