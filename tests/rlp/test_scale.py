"""Meshes, cross-mesh restore, damaged checkpoints (in-process, 8 fake CPU devices)."""

import os
import shutil

import numpy as np
import pytest

from rlp import loop, metrics, sharding
from tests.launch.test_train import tiny_config

MESHES = [(1, 1, 1), (8, 1, 1), (2, 2, 2), (1, 4, 2)]
KEYS = {"rlp": ("loss", "grad_norm", "rlp/reward_mean", "rlp/s_pred_mean", "rlp/s_ema_mean",
                "rlp/entropy", "rlp/thought_len_mean"),
        "cpt": ("loss", "grad_norm")}


def _cfg(objective, mesh, steps=3, **kw):
  c = tiny_config(objective=objective, **{"train.steps": steps, "train.eval_docs": 0,
                                          "train.plot": False, "train.tensorboard": False,
                                          "train.checkpoint_every": 2, **kw})
  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = mesh
  return c


def _losses(wd, keys):
  return {r["step"]: [r[k] for k in keys] for r in metrics.read_metrics(wd) if "loss" in r}


@pytest.mark.parametrize("objective", ["rlp", "cpt"])
def test_same_results_on_every_mesh(objective, tmp_path):
  runs = {}
  for mesh in MESHES:
    wd = str(tmp_path / "_".join(map(str, mesh)))
    loop.train(_cfg(objective, mesh), wd)
    runs[mesh] = _losses(wd, KEYS[objective])
  ref = runs[(1, 1, 1)]
  assert sorted(ref) == [1, 2, 3]
  for mesh, got in runs.items():
    for step in ref:
      np.testing.assert_allclose(got[step], ref[step], rtol=2e-4, atol=2e-5,
                                 err_msg=f"mesh {mesh} step {step}")


def test_params_are_sharded_by_the_rules():
  import jax
  mesh = sharding.make_mesh((2, 2, 2))
  spec = sharding.logical_to_spec(("layers", "embed", "heads", "head_dim"), (2, 64, 4, 16), mesh)
  assert spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor", None)
  # a dimension the mesh axis does not divide stays replicated
  assert sharding.logical_to_spec(("vocab", "embed"), (261, 64), mesh) == \
      jax.sharding.PartitionSpec(None, "fsdp")
  with pytest.raises(sharding.MeshError, match="does not divide the 8 devices"):
    sharding.mesh_shape((3, -1, 1), 8)


def test_restore_on_a_different_mesh_continues_equally(tmp_path):
  full = str(tmp_path / "full")
  loop.train(_cfg("rlp", (8, 1, 1), steps=4), full)
  want = _losses(full, KEYS["rlp"])
  part = str(tmp_path / "part")
  loop.train(_cfg("rlp", (8, 1, 1), steps=2), part)
  for mesh in [(2, 2, 2), (1, 1, 1)]:
    wd = str(tmp_path / f"resume_{mesh[0]}{mesh[1]}{mesh[2]}")
    shutil.copytree(part, wd)
    loop.train(_cfg("rlp", mesh, steps=4), wd)
    got = _losses(wd, KEYS["rlp"])
    for step in (3, 4):
      np.testing.assert_allclose(got[step], want[step], rtol=2e-4, atol=2e-5,
                                 err_msg=f"mesh {mesh} step {step}")


def test_damaged_newest_checkpoint_falls_back(tmp_path, capsys):
  wd = str(tmp_path / "run")
  loop.train(_cfg("cpt", (1, 1, 1), steps=4), wd)
  ck = os.path.join(wd, "checkpoints")
  assert sorted(os.listdir(ck)) == ["2", "4"]
  # truncate one array file of the newest checkpoint
  victims = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(ck, "4", "state"))
             for f in fs if os.path.getsize(os.path.join(d, f)) > 200]
  for v in victims:
    with open(v, "r+b") as f:
      f.truncate(16)
  logs = []
  loop.train(_cfg("cpt", (1, 1, 1), steps=5), wd, log=logs.append)
  assert any("checkpoint step 4" in l and "damaged" in l for l in logs), logs
  assert any("resumed from" in l and "step 2" in l for l in logs), logs
  names = sorted(os.listdir(ck))
  assert "4.damaged-0" in names and "2" in names  # set aside, not deleted
  steps = [r["step"] for r in metrics.read_metrics(wd) if "loss" in r]
  assert steps == [1, 2, 3, 4, 5]
  assert os.path.exists(os.path.join(wd, "metrics.rewound.jsonl"))
