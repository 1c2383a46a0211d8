"""rlp-export: a run's checkpoint as an HF directory that transformers loads with our logits."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _export(*args):
  return subprocess.run([sys.executable, "-m", "launch.export", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  from configs import tiny
  from rlp import loop
  c = tiny.get_config()
  c.train.steps, c.train.checkpoint_every, c.train.eval_docs = 2, 2, 0
  c.train.progress, c.train.plot, c.train.sample_every, c.mesh.data = False, False, 0, 1
  wd = str(tmp_path_factory.mktemp("run") / "wd")
  loop.train(c, wd, log=lambda m: None)
  return wd


@pytest.mark.parametrize("use_ema", [False, True])
def test_export_loads_in_transformers_with_our_logits(run_dir, tmp_path, use_ema):
  import torch
  import transformers
  from rlp import evaluate
  out = str(tmp_path / "hf")
  r = _export(run_dir, out, *(["--use_ema"] if use_ema else []))
  assert r.returncode == 0, r.stderr[-2000:]
  info = json.loads(r.stdout.strip().splitlines()[-1])
  assert info["step"] == 2 and info["ema"] == use_ema
  assert {"config.json", "model.safetensors", "tokenizer.json",
          "tokenizer_config.json"} <= set(os.listdir(out))
  ours, tok, _ = evaluate.load_for_eval(run_dir, use_ema)
  hf_tok = transformers.AutoTokenizer.from_pretrained(out)
  text = "Tom has 3 apples <think> 3+4 </think> and 7 pears. é"
  ids = tok.encode(text)
  assert hf_tok.encode(text, add_special_tokens=False) == ids
  assert hf_tok.decode(ids) == text and hf_tok.eos_token_id == tok.eos_id
  hf = transformers.AutoModelForCausalLM.from_pretrained(out, torch_dtype=torch.float32).eval()
  with torch.no_grad():
    want = hf(torch.tensor([ids])).logits.numpy()[0]
  got = np.asarray(ours(jax.numpy.asarray([ids], jax.numpy.int32))[0])
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
  # generate() stops at the tokenizer's EOS: the generation config names it
  assert hf.generation_config.eos_token_id == tok.eos_id


def test_export_refuses_to_overwrite_and_names_bad_input(run_dir, tmp_path):
  out = tmp_path / "taken"
  out.mkdir()
  (out / "config.json").write_text("{}")
  r = _export(run_dir, str(out))
  assert r.returncode == 2 and "already holds config.json" in r.stderr
  assert (out / "config.json").read_text() == "{}"
  r = _export(str(tmp_path), str(tmp_path / "x"))
  assert r.returncode == 2 and "not a run's workdir" in r.stderr


def test_eval_checkpoint_shares_compiles_with_a_fresh_model(run_dir):
  """Orbax restores arrays committed to a device; the eval hands them back uncommitted like a
  freshly built model's, so one jitted function serves both without compiling again (a notebook
  that evaluates the base model and then the trained one compiles its rollout once)."""
  from flax import nnx
  from rlp import configuration
  from rlp import evaluate
  trained, _, desc = evaluate.load_for_eval(run_dir)
  fresh, _ = configuration.load_model_and_tokenizer(desc["config"])
  leaves = jax.tree.leaves(nnx.state(trained))
  assert leaves and not any(a.committed for a in leaves)
  f = jax.jit(lambda s: sum(x.sum() for x in jax.tree.leaves(s)))
  a, b = f(nnx.state(fresh)), f(nnx.state(trained))
  assert f._cache_size() == 1
  assert float(a) != float(b)  # the restored params are the trained ones, not the fresh init
