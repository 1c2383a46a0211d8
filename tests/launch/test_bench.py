"""rlp-bench on the tiny random model: each command's last line is one JSON object with the keys
benchmark spec names (the figures themselves are reported, never asserted)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _bench(*args):
  env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-m", "launch.bench", *args], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-2000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_model_and_peak():
  r = _bench("model", "--model=tiny", "--iters=1", "--remat=dots", "--loss_chunk=64")
  for k in ("tokens_per_sec", "mfu", "step_seconds", "flops_per_token", "peak_flops"):
    assert r[k] > 0, k
  assert r["remat"] == "dots" and r["loss_chunk"] == 64 and r["platform"] == "cpu"
  p = _bench("peak")
  assert p["measured_float32_flops"] > 0 and p["peak_flops"] == p["measured_float32_flops"]


def test_the_cpu_peak_counts_every_device_a_step_uses():
  """MFU's CPU denominator: all local devices multiply at once, as a step on a mesh over them
  does (one fake CPU device alone measured less than the host gives all of them, and notebook 03
  showed an MFU of 1.2); the source string says how many devices were measured."""
  import jax
  from rlp import metrics
  assert jax.local_device_count() == 8  # tests/conftest.py
  a, _ = metrics._peak_operands(32, "float32", 0, jax.local_devices())
  assert a.shape == (8, 32, 32)
  assert {s.device for s in a.addressable_shards} == set(jax.local_devices())
  peak, src = metrics.device_peak_flops("float32")
  assert peak == metrics.measured_peak_flops("float32") > 0
  assert src == "measured matmul, 8 cpu device(s) at once"
  # a run on a mesh over 2 of the 8 devices divides by those 2, whatever mesh is set
  with jax.set_mesh(jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ("x",))):
    two, src2 = metrics.device_peak_flops("float32", devices=jax.devices()[:2])
  assert src2 == "measured matmul, 2 cpu device(s) at once" and two > 0


@pytest.mark.slow
def test_rlp_step_with_peer():
  pytest.importorskip("torch")
  r = _bench("rlp-step", "--model=tiny", "--iters=1", "--peer", "--contexts=2", "--context_len=64",
             "--thought=16")
  for k in ("step_seconds", "rollout_seconds", "score_seconds", "update_seconds", "rlp_over_cpt",
            "peer_step_seconds", "speedup_vs_peer", "decode_over_bound", "decode_step_seconds"):
    assert r[k] > 0, k


def test_unknown_command_is_a_usage_error():
  env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-m", "launch.bench", "nope"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
  assert out.returncode != 0 and "usage: rlp-bench" in out.stderr


def test_decode_bound_arithmetic(monkeypatch):
  """decode_over_bound: the marginal step time between thoughts of T and T/2 over the larger of
  the memory time (weights + needed KV cache at the bandwidth) and the matmul time."""
  import jax
  from flax import nnx
  import models
  from bench import common
  from rlp import metrics
  cfg = models.ModelConfig(vocab_size=100, d_model=16, n_layers=2, n_heads=2, n_kv_heads=1,
                           head_dim=8, d_ff=32)
  b = metrics.decode_step_bound(cfg, streams=4, kv_tokens=50, attended=20, weight_bytes=1000,
                                kv_value_bytes=4, flops_rate=1e6, bandwidth=1e4)
  kv = 2 * 2 * 1 * 8 * 4 * 50
  n = cfg.num_params(include_embedding=False) + 100 * 16
  flops = 4 * (2 * n + 4 * 2 * 2 * 8 * 20)
  assert b["bound_kv_bytes"] == kv and b["bound_flops"] == flops
  assert b["bound_memory_seconds"] == (1000 + kv) / 1e4 and b["bound_matmul_seconds"] == flops / 1e6
  assert b["bound_seconds"] == max((1000 + kv) / 1e4, flops / 1e6)
  assert b["bound_by"] == ("memory" if (1000 + kv) / 1e4 >= flops / 1e6 else "matmul")
  model = models.Transformer(cfg, rngs=nnx.Rngs(0))
  monkeypatch.setattr(common, "alternate", lambda fns, rounds: {"full": 3.0, "half": 1.0})
  monkeypatch.setattr(metrics, "measured_peak_flops", lambda dtype: 1e6)
  monkeypatch.setattr(metrics, "measured_bandwidth", lambda: 1e4)
  calls = []
  got = common.decode_over_bound(model, lambda t: (lambda: calls.append(t)), thought=8, streams=4,
                                 prefix_kv_tokens=10, mean_prefix=5, dtype="float32", iters=1)
  assert calls == [8, 4]  # each length run once before timing
  assert got["decode_step_seconds"] == 2.0 / 4  # (3 s - 1 s) over the 4 extra tokens
  weights = sum(x.nbytes for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
  want = metrics.decode_step_bound(cfg, streams=4, kv_tokens=10 + 4 * 6, attended=5 + 6,
                                   weight_bytes=weights, kv_value_bytes=4, flops_rate=1e6,
                                   bandwidth=1e4)
  assert got["bound_seconds"] == want["bound_seconds"]
  assert got["decode_over_bound"] == 0.5 / want["bound_seconds"]


def test_memory_plan_parts_and_checks(tmp_path):
  """rlp-bench memory: the state parts equal the train state's bytes, sharding divides them, the
  rollout chunk divides the KV caches, grad_accum the update, the estimate is printed beside the
  compiled program's own figure (--check), and bad input is one line (exit 2)."""
  import jax
  from bench import memory
  from configs import tiny, qwen3_1p7b_rlp
  c = tiny.get_config()
  c.mesh.data = 1
  one = memory.run(c, n_devices=1, device_memory_gb=1.0, check=False)
  from flax import nnx
  import models
  from rlp import configuration, trainer
  state = trainer.init_state(models.Transformer(configuration.model_config(c), rngs=nnx.Rngs(0)),
                             configuration.optimizer(c))
  nbytes = lambda tree: sum(x.nbytes for x in jax.tree.leaves(tree)) / memory.GiB  # noqa: E731
  assert one["params_gib"] == nbytes(state.params) and one["ema_gib"] == nbytes(state.ema)
  assert one["optimizer_gib"] == nbytes(state.opt_state) and one["reference_gib"] == 0
  assert one["fits"] and one["device_memory_gib"] == 1.0
  c.rlp.rollout_batch = 2
  c.rlp.grad_accum = 4
  chunked = memory.run(c, n_devices=1)
  assert chunked["rollout_thought_kv_gib"] == one["rollout_thought_kv_gib"] / 4
  assert chunked["update_activations_gib"] < one["update_activations_gib"] / 3
  # one prefix forward for rollout and update keeps its residuals through the rollout; a chunked
  # rollout (or several micro-batches) computes the prefix twice and keeps nothing
  assert 0 < one["rollout_prefix_residuals_gib"] < one["update_activations_gib"]
  assert "rollout_prefix_residuals_gib" not in chunked
  c.mesh.fsdp = 2
  c.rlp.rollout_batch = 0
  sharded = memory.run(c, n_devices=2)
  assert sharded["mesh"] == {"data": 1, "fsdp": 2, "tensor": 1}
  assert sharded["contexts_per_device"] == 4 and sharded["optimizer_gib"] < one["optimizer_gib"]
  c = tiny.get_config()
  c.mesh.data = -1
  checked = memory.run(c, check=True)  # this machine's 8 fake devices
  assert checked["compiled_total_gib"] > 0 and 0.5 < checked["check_ratio"] < 2.0
  # the configs' docstrings: the paper's Qwen3-1.7B step fits 32 x 80 GB by the estimate, with
  # chunked rollouts and the head in chunks; with the full thought logits it would not
  q = memory.run(qwen3_1p7b_rlp.get_config(), n_devices=32, device_memory_gb=80,
                 shape="qwen3-1.7b", platform="gpu")
  assert q["model_params"] > 1.7e9 and q["mesh"]["fsdp"] == 32 and q["fits"]
  assert q["loss_chunk"] == 256 and q["rollout_contexts_per_chunk"] == 4
  full = qwen3_1p7b_rlp.get_config()
  full.train.loss_chunk = 0
  assert not memory.run(full, n_devices=32, device_memory_gb=80, shape="qwen3-1.7b")["fits"]
  with pytest.raises(memory.MemoryPlanError, match="--model_shape=NAME"):
    memory.run(qwen3_1p7b_rlp.get_config(), n_devices=32)
  env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
  r = subprocess.run([sys.executable, "-m", "launch.bench", "memory", "--config=configs/tiny.py",
                      "--model_shape=gpt5"], cwd=ROOT, env=env, capture_output=True, text=True,
                     timeout=300)
  assert r.returncode == 2 and "--model_shape='gpt5': known shapes are" in r.stderr


def test_long_thoughts_rows():
  """bench.long_thoughts: one row per length plus the whole-buffer comparison (a tiny model
  here), every thought run to its limit (a fixed count: streams x (limit + the 3-token closer))."""
  sys.path.insert(0, ROOT)
  from bench import long_thoughts
  from flax import nnx
  import models
  tiny = models.Transformer(models.ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4,
                                               n_kv_heads=2, head_dim=8, d_ff=48),
                            rngs=nnx.Rngs(0))
  rows = long_thoughts.run([4], group=2, whole_buffer_too=True, model=tiny)
  assert [(r["thought"], r["attend_block"]) for r in rows] == [(4, 128), (4, 0)]
  for r in rows:
    assert r["thought_tokens"] == 2 * (r["thought"] + 3)
    assert r["tokens_per_sec"] > 0 and r["read_spans"] == [3 + r["thought"] + 3]
