"""The lm-evaluation-harness backend: log-likelihoods, rolling log-likelihoods and greedy
generations against explicit forwards; the CLIs (rlp-eval harness / table, rlp-lm-eval) on the
offline tasks; parity with the harness's own HF backend on SmolLM2."""

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
from models.tokenizer import byte_tokenizer, save_hf_tokenizer

pytest.importorskip("lm_eval")
from rlp import harness  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class _Req:
  def __init__(self, *args):
    self.args = args


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory):
  """A small random byte-level model as an HF directory (what rlp-export writes)."""
  out = str(tmp_path_factory.mktemp("hf"))
  model = models.Transformer(models.ModelConfig(vocab_size=260, d_model=32, n_layers=2, n_heads=4,
                                                n_kv_heads=2, head_dim=8, d_ff=64),
                             rngs=nnx.Rngs(0))
  models.save_hf(model, out)
  save_hf_tokenizer(byte_tokenizer(), out)
  return out


def _logp(model, ids):
  return np.asarray(jax.nn.log_softmax(model(jnp.asarray([ids]))[0].astype(jnp.float32)))


def test_backend_equals_explicit_forwards(tiny_hf):
  lm = harness.RLPLM(path=tiny_hf, batch_size=2, max_length=16)
  model, tok = lm.model, lm.tok
  # data-parallel over the suite's 8 CPU devices: params on all of them, batches split over them
  # (everything below is compared with single-device forwards of the same model)
  assert jax.device_count() == 8 and lm.mesh.size == 8 and lm.batch_size == 8
  assert len(jax.tree.leaves(lm.params)[0].sharding.device_set) == 8
  # loglikelihood: the continuation's tokens after the context (a trailing space moves over)
  reqs = [("3+4=", "7"), ("The cat ", "sat"), ("a", "bcdefg")]
  got = lm.loglikelihood([_Req(*r) for r in reqs], disable_tqdm=True)
  for (ctx, cont), (lp, greedy) in zip(reqs, got):
    c = ctx.rstrip()
    ids = tok.encode(c) + tok.encode(ctx[len(c):] + cont)
    n = len(tok.encode(ctx[len(c):] + cont))
    full = _logp(model, ids)
    want = sum(full[i - 1, ids[i]] for i in range(len(ids) - n, len(ids)))
    assert abs(lp - want) < 1e-4
    assert greedy == all(full[i - 1].argmax() == ids[i] for i in range(len(ids) - n, len(ids)))
  # rolling, as the harness defines it: after the prefix token, blocks of max_length (16) tokens
  # each read with the token before the block; the last, partial block with a full 16 tokens of
  # context; every token scored once
  text = "0123456789abcdefghijklmnopqrstuvwxyz"  # 36 tokens: blocks 0-15, 16-31, 32-35
  (roll,) = lm.loglikelihood_rolling([_Req(text)], disable_tqdm=True)
  ids = [lm.prefix_token_id] + tok.encode(text)  # ids[i + 1] is text token i
  want = 0.0
  for first, last in ((0, 15), (16, 31), (32, 35)):
    inp = ids[max(0, last + 1 - 16):last + 1]  # the 16 tokens before text token `last`
    lp = _logp(model, inp + [ids[last + 1]])
    for i in range(first, last + 1):  # text token i at row (i + 1) - start of inp
      row = (i + 1) - max(0, last + 1 - 16)
      want += lp[row - 1, ids[i + 1]]
  np.testing.assert_allclose(roll, want, rtol=1e-4)
  # greedy generation, cut at the first stop string
  (gen,) = lm.generate_until([_Req("1+1=", {"until": ["\n"], "max_gen_toks": 6})])
  want = tok.decode(np.asarray(models.greedy_generate(model, tok.encode("1+1="), 6))[0].tolist())
  assert gen == want.split("\n")[0]
  with pytest.raises(harness.evaluate.EvalError, match="greedily"):
    lm.generate_until([_Req("1+1=", {"do_sample": True, "temperature": 0.7})])
  with pytest.raises(harness.evaluate.EvalError, match="takes path"):
    harness.RLPLM(path=tiny_hf, temprature=1.0)


def test_thinking_first_scores_after_the_thought(tiny_hf):
  lm = harness.RLPLM(path=tiny_hf, batch_size=2, think=True, thought_len=4)
  ctx = lm.tok_encode("3+4=")
  with_thought = lm._with_thought(ctx)
  assert with_thought[:len(ctx) + 1] == ctx + list(lm.fmt.prompt_ids)
  assert with_thought[-len(lm.fmt.close_ids):] == list(lm.fmt.close_ids)
  ((lp, _),) = lm.loglikelihood([_Req("3+4=", "7")], disable_tqdm=True)
  ids = with_thought + lm.tok_encode("7")
  assert abs(lp - _logp(lm.model, ids)[-2, ids[-1]]) < 1e-4


def _cli(*args, timeout=900):
  return subprocess.run([sys.executable, "-m", "launch.evaluate", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=timeout)


def test_harness_and_table_cli(tiny_hf, tmp_path):
  out = tmp_path / "h"
  r = _cli("harness", f"--model={tiny_hf}", "--tasks=rlp_digit_sums_mc", "--limit=4",
           "--batch_size=4", f"--output_path={out}")
  assert r.returncode == 0, r.stderr[-3000:]
  assert "rlp_digit_sums_mc" in r.stdout and "|acc" in r.stdout.replace(" ", "")
  res = json.loads((out / "results.json").read_text())
  acc = res["results"]["rlp_digit_sums_mc"]["acc,none"]
  assert 0 <= acc <= 1 and res["n-samples"]["rlp_digit_sums_mc"]["effective"] == 4
  # bad input: one line, exit 2 (the CLI turns every EvalError into that; the other two kinds
  # are checked in-process, a subprocess each costs the harness's import)
  r = _cli("harness", f"--model={tiny_hf}", "--tasks=no_such_task", "--limit=2")
  assert r.returncode == 2 and "unknown ['no_such_task']" in r.stderr and \
      len(r.stderr.strip().splitlines()) == 1, r.stderr[-2000:]
  bad = tmp_path / "bad_tasks"
  bad.mkdir()
  (bad / "broken.yaml").write_text("task: broken\ndataset_path: [unclosed\n")
  with pytest.raises(harness.evaluate.EvalError, match="broken.yaml does not parse"):
    harness.check_task_files(str(bad))
  with pytest.raises(harness.evaluate.EvalError, match="is not a GGUF file"):
    harness.RLPLM(path=str(tmp_path))
  table = tmp_path / "t"
  r = _cli("table", tiny_hf, tiny_hf, "--tasks=rlp_digit_sums_mc,rlp_gsm_symbolic_mc", "--limit=4",
           "--likelihood_source=toy:eval", "--likelihood_docs=2", f"--output_path={table}")
  assert r.returncode == 0, r.stderr[-3000:]
  md = (table / "table.md").read_text()
  assert md.count(f"| {tiny_hf} |") == 2 and "rlp_gsm_symbolic_mc (acc, n=4)" in md
  assert (table / "chart.png").exists()
  rows = json.loads((table / "table.json").read_text())
  assert rows[0]["tasks"] == rows[1]["tasks"]  # the same model twice: the same scores


def test_rlp_lm_eval_is_the_harness_cli_with_our_model(tiny_hf):
  r = subprocess.run([sys.executable, "-m", "launch.lm_eval_cli", "--model=rlp",
                      f"--model_args=path={tiny_hf}", "--tasks=rlp_digit_sums_mc", "--limit=2"],
                     cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert r.returncode == 0, r.stderr[-3000:]
  assert "rlp_digit_sums_mc" in r.stdout


@pytest.mark.slow
def test_parity_with_the_harness_hf_backend_on_smollm2(tmp_path, smollm2):
  """The same tasks through the harness's HF backend (transformers, the same SmolLM2 weights
  exported) and ours: every log-likelihood to float tolerance, greedy generations word for word."""
  import lm_eval
  from lm_eval.tasks import TaskManager
  model, tok, path = smollm2
  hf_dir = str(tmp_path / "hf")
  models.save_hf(model, hf_dir)
  save_hf_tokenizer(tok, hf_dir)
  tasks_dir = harness.local_tasks_dir(str(tmp_path / "tasks"))
  with open(os.path.join(tasks_dir, "rlp_gsm_symbolic.yaml")) as f:  # shorter answers: faster
    text = f.read().replace("max_gen_toks: 160", "max_gen_toks: 24")
  with open(os.path.join(tasks_dir, "rlp_gsm_symbolic.yaml"), "w") as f:
    f.write(text)
  tm = TaskManager(include_path=tasks_dir)
  kw = dict(tasks=["rlp_gsm_symbolic_mc", "rlp_gsm_symbolic"], limit=3, task_manager=tm,
            log_samples=True, num_fewshot=1)
  ours = lm_eval.simple_evaluate(model=harness.RLPLM(path=path, batch_size=4), **kw)
  ref = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={hf_dir},dtype=float32",
                                device="cpu", batch_size=4, **kw)
  for task in kw["tasks"]:
    for a, b in zip(ours["samples"][task], ref["samples"][task]):
      if task.endswith("_mc"):
        la = [r[0][0] for r in a["resps"]]
        lb = [r[0][0] for r in b["resps"]]
        np.testing.assert_allclose(la, lb, atol=2e-3, rtol=1e-4)
      else:
        assert a["resps"] == b["resps"]


def test_task_suites_resolve_by_backend_and_the_paper_tasks_exist():
  """--tasks: auto is the offline suite (with its default problem count) on CPU and the paper's
  benchmarks on an accelerator; names pass through; every paper task is one the installed
  harness knows (its task index only, no download)."""
  tasks, limit, chose = harness.resolve_tasks(["auto"], None, backend="cpu")
  assert tasks == list(harness.OFFLINE_TASKS) and limit == harness.OFFLINE_LIMIT
  assert "auto -> offline" in chose
  assert harness.resolve_tasks(["offline"], 7)[:2] == (list(harness.OFFLINE_TASKS), 7)
  tasks, limit, chose = harness.resolve_tasks(None, None, backend="gpu")
  assert tasks == list(harness.PAPER_TASKS) and limit is None and "backend gpu" in chose
  assert harness.resolve_tasks(["gsm8k", "paper"], 0.5, backend="cpu")[:2] == \
      (list(harness.PAPER_TASKS), 0.5)
  assert harness.resolve_tasks(["rlp_gsm_symbolic"], None) == (["rlp_gsm_symbolic"], None, "")
  from lm_eval.tasks import TaskManager
  tm = TaskManager(include_path=[harness.local_tasks_dir(str(ROOT) + "/data/harness_tasks")])
  missing = [t for t in harness.PAPER_TASKS + harness.OFFLINE_TASKS if not tm.match_tasks([t])]
  assert not missing, missing
