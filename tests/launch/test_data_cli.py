"""rlp-data build / inspect / train-tokenizer as a user runs them."""

import json
import os
import subprocess
import sys

from models.tokenizer import load_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _cli(*args):
  return subprocess.run([sys.executable, "-m", "launch.data", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=300)


def test_build_inspect_and_refuse_overwrite(tmp_path):
  out = tmp_path / "ds"
  r = _cli("build", "--source=reasoning:train", "--num_docs=30", f"--output={out}",
           "--num_shards=2")
  assert r.returncode == 0, r.stderr
  summary = json.loads(r.stdout.strip().splitlines()[-1])
  assert summary["documents"] == 30 and summary["tokens"] > 1000
  manifest = json.loads((out / "manifest.json").read_text())
  assert len(manifest["shards"]) == 2
  r = _cli("inspect", f"--output={out}")
  assert r.returncode == 0 and json.loads(r.stdout.strip().splitlines()[-1])["documents"] == 30
  r = _cli("build", "--source=reasoning:train", "--num_docs=5", f"--output={out}")
  assert r.returncode == 2 and "already holds a dataset" in r.stderr
  assert json.loads((out / "manifest.json").read_text())["documents"] == 30  # untouched


def test_train_sentencepiece_tokenizer(tmp_path):
  prefix = tmp_path / "sp" / "tok"
  r = _cli("train-tokenizer", "--source=reasoning:train", "--num_docs=300", "--vocab_size=600",
           f"--output={prefix}")
  assert r.returncode == 0, r.stderr
  tok = load_tokenizer(str(prefix) + ".model")
  assert tok.vocab_size == 600
  assert len(tok.think_open_ids) == 1 and len(tok.think_close_ids) == 1
  text = "Question: 12 apples <think>12 + 3</think> 15"
  assert tok.decode(tok.encode(text)) == text


def test_unknown_command_is_a_usage_error():
  r = _cli("frobnicate")
  assert r.returncode != 0 and "usage: rlp-data" in (r.stderr + r.stdout)


def test_build_the_testbed_corpus(tmp_path):
  out = tmp_path / "toy"
  r = _cli("build", "--source=toy:train:0.5", "--num_docs=20", "--tokenizer=bytes",
           f"--output={out}")
  assert r.returncode == 0, r.stderr
  assert json.loads(r.stdout.strip().splitlines()[-1])["documents"] == 20
  r = _cli("build", "--source=toy:train:x", "--tokenizer=bytes", f"--output={tmp_path}/bad")
  assert r.returncode == 2 and "toy:train:x" in r.stderr


def test_diversity_and_select_commands(tmp_path):
  """rlp-data diversity / select with a small HF-directory proxy; the selection is a dataset the
  trainer opens."""
  from flax import nnx
  import models
  from models.tokenizer import byte_tokenizer, load_tokenizer, save_hf_tokenizer
  proxy = str(tmp_path / "proxy")
  model = models.Transformer(models.ModelConfig(vocab_size=260, d_model=32, n_layers=2,
                                                n_heads=4, n_kv_heads=2, head_dim=8, d_ff=64),
                             rngs=nnx.Rngs(0))
  models.save_hf(model, proxy)
  save_hf_tokenizer(byte_tokenizer(), proxy)
  common = [f"--model={proxy}", "--proj_dim=16", "--max_docs=12", "--seq_len=48", "--batch=4"]
  r = _cli("diversity", "toy:train", *common)
  assert r.returncode == 0, r.stderr[-2000:]
  got = json.loads(r.stdout.strip().splitlines()[-1])
  assert got["n"] == 12 and got["proj_dim"] == 16 and 1 <= got["g_vendi"] <= 12
  assert got["model"] == proxy and got["seconds"] > 0
  out = str(tmp_path / "sel")
  from rlp import data
  for method in ("cluster", "greedy"):
    extra = [f"--random_output={out}-random"] if method == "greedy" else []
    r = _cli("select", "toy:train", *common, "--by=gvendi", f"--method={method}", "--n=5",
             f"--output={out}-{method}", *extra)
    assert r.returncode == 0, r.stderr[-2000:]
    sel = json.loads(r.stdout.strip().splitlines()[-1])
    assert sel["selected"] == 5 and sel["pool"] == 12
    ds, _ = data.open_documents(f"arrayrecord:{out}-{method}", load_tokenizer(proxy))
    assert len(ds) == 5
  # the random baseline of the same size from the same pool, as its own dataset
  rnd, _ = data.open_documents(f"arrayrecord:{out}-random", load_tokenizer(proxy))
  pool, _ = data.open_documents("toy:train", load_tokenizer(proxy), num_docs=12)
  pool = {tuple(pool[i][:48]) for i in range(12)}
  assert len(rnd) == 5 and all(tuple(rnd[i]) in pool for i in range(5))
  r = _cli("select", "toy:train", *common, "--n=5", f"--output={out}-greedy")
  assert r.returncode == 2 and "already holds a dataset" in r.stderr
  r = _cli("select", "toy:train", *common, "--n=5", f"--output={out}-new",
           f"--random_output={out}-random")
  assert r.returncode == 2 and f"{out}-random already holds a dataset" in r.stderr
  assert not os.path.exists(f"{out}-new")  # refused before anything was written
