"""Sharding overhead (tiny RLP step on 1 vs 8 fake CPU devices, in subprocesses) and checkpoint
save/restore time and size of a SmolLM2-135M train state (params + EMA + Adam)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import jax

from bench import common

_CHILD = r"""
import json, sys, jax, jax.numpy as jnp
from bench.rlp_step import _setup
from bench.model import load
from bench import common
from flax import nnx
from rlp import sharding, trainer
model = load("tiny")
batch, cfg = _setup(model, 8, 128, 4, 16)
mesh = sharding.make_mesh((-1, 1, 1))
tx = trainer.make_optimizer(1e-4)
with jax.set_mesh(mesh):
  state = trainer.init_state(model, tx)
  sh = sharding.state_shardings(state, tx, mesh, sharding.logical_axes(model))
  state = jax.device_put(state, sh)
  batch = sharding.shard_batch({k: jax.device_get(v) for k, v in batch.items()}, mesh)
  step = trainer.make_step(nnx.graphdef(model), tx, cfg)
  holder = [state]
  def f():
    holder[0], m, _ = step(holder[0], batch)
    jax.block_until_ready(m["loss"])
  t = common.timeit(f, warmup=2, iters=5)["best"]
print(json.dumps({"devices": jax.device_count(), "step_seconds": t}))
"""


def _step_time(n_devices):
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n_devices}",
             JAX_PLATFORMS="cpu")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  r = subprocess.run([sys.executable, "-c", _CHILD], cwd=root, env=env, capture_output=True,
                     text=True, timeout=900)
  if r.returncode:
    raise RuntimeError(r.stderr[-2000:])
  return json.loads(r.stdout.strip().splitlines()[-1])["step_seconds"]


def _dir_bytes(path):
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def run(model_name="smollm2"):
  from bench.model import load
  from rlp import checkpoint
  from rlp import trainer
  out = {"bench": "scale", **common.device_info()}
  t1, t8 = _step_time(1), _step_time(8)
  out.update(step_seconds_1_device=t1, step_seconds_8_devices=t8, sharding_overhead=t8 / t1)
  model = load(model_name)
  tx = trainer.make_optimizer(1e-6)
  state = trainer.init_state(model, tx)
  d = tempfile.mkdtemp()
  try:
    # laid out as a run's (workdir/checkpoints) and read back the way rlp-eval and a run started
    # from another's weights read one (checkpoint.restore_run)
    ck = checkpoint.Checkpointer(os.path.join(d, "checkpoints"), async_save=False)
    t = time.perf_counter()
    ck.save(1, state, {"it": 0}, {"model": model_name})
    ck.wait()
    ck.close()
    out["checkpoint_save_seconds"] = time.perf_counter() - t
    out["checkpoint_bytes"] = _dir_bytes(os.path.join(d, "checkpoints"))
    t = time.perf_counter()
    got = checkpoint.restore_run(d, checkpoint.abstract_like(state), log=lambda *a: None)
    jax.block_until_ready(got.state)
    out["checkpoint_restore_seconds"] = time.perf_counter() - t
  finally:
    shutil.rmtree(d, ignore_errors=True)
  return out
