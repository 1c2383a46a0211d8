"""rlp-bench on the tiny random model: each command's last line is one JSON object with the keys
benchmark spec names (the figures themselves are reported, never asserted)."""

import json
import os
import subprocess
import sys

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
  from rlp import metrics as M
  assert jax.local_device_count() == 8  # tests/conftest.py
  a, _ = M._peak_operands(32, "float32", 0)
  assert a.shape == (8, 32, 32)
  assert {s.device for s in a.addressable_shards} == set(jax.local_devices())
  peak, src = M.device_peak_flops("float32")
  assert peak == M.measured_peak_flops("float32") > 0
  assert src == "measured matmul, 8 cpu device(s) at once"


@pytest.mark.slow
def test_rlp_step_with_peer():
  pytest.importorskip("torch")
  r = _bench("rlp-step", "--model=tiny", "--iters=1", "--peer")
  for k in ("step_seconds", "rollout_seconds", "score_seconds", "update_seconds", "rlp_over_cpt",
            "peer_step_seconds", "speedup_vs_peer"):
    assert r[k] > 0, k


def test_unknown_command_is_a_usage_error():
  env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-m", "launch.bench", "nope"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
  assert out.returncode != 0 and "usage: rlp-bench" in out.stderr
