"""Each notebook runs top to bottom on CPU in its reduced form (RLP_NOTEBOOK_FAST=1) and draws
its figures; 01's reduced form is also the smoke test of the README's main job (02 has a file of
its own, so the suite's two workers can run the two long notebooks at once)."""

import json
import math
import os

import nbformat
import pytest

from nbrun import HERE, execute


@pytest.mark.slow
def test_quickstart_runs_the_main_job_and_its_cpt_twin(tmp_path, monkeypatch, full_optimization):
  """A smoke test on purpose: 01 trains configs/smollm2_rlp.py (the README's main job) on the real
  SmolLM2 with its own settings but 2 steps (RLP at the lowest no-think log-prob positions with the
  scorer term, the held-out thought eval against placebos at the end, the curves) and its CPT
  twin; the values are the unit tests' (the in-run warm-up path:
  test_format_warmup_inside_one_run)."""
  from configs import smollm2_rlp
  from rlp import metrics
  c = smollm2_rlp.get_config()
  assert c.data.selection == "low_logp" and c.rlp.scorer_weight > 0 and c.warmup.steps == 0
  execute("01_quickstart", tmp_path, monkeypatch)
  rows = metrics.read_metrics(str(tmp_path / "rlp"))
  assert [r["step"] for r in rows if "loss" in r] == [1, 2]
  assert any("rlp/scorer_nll" in r for r in rows)
  assert all(math.isfinite(r["rlp/s_pred_mean"]) and math.isfinite(r["rlp/reward_mean"])
             for r in rows if "loss" in r)
  last = next(r for r in reversed(rows) if "eval/information_gain" in r)
  assert last["step"] == 2 and math.isfinite(last["eval/information_gain"])
  lo, hi = last["eval/gain_over_placebo/empty_ci"]
  assert lo <= last["eval/gain_over_placebo/empty"] <= hi
  for run in ("rlp", "cpt"):
    assert os.path.exists(tmp_path / run / "curves.png")


@pytest.mark.slow
def test_scaling_up_notebook_trains_fsdp_over_every_device(tmp_path, monkeypatch):
  """03's reduced form: the tiny model for 3 steps with its parameters sharded over all 8 of the
  suite's devices (FSDP), checkpointed, with a throughput and an MFU per step (the notebook
  itself checks 0 < MFU <= 1)."""
  from rlp import metrics
  execute("03_scaling_up", tmp_path, monkeypatch)
  wd = tmp_path / "tiny"
  rows = [r for r in metrics.read_metrics(str(wd)) if "loss" in r]
  assert [r["step"] for r in rows] == [1, 2, 3]
  assert all(r["perf/tokens_per_sec"] > 0 and 0 < r["perf/mfu"] <= 1 for r in rows)
  mesh = json.load(open(wd / "config.json"))["mesh"]
  assert (mesh["data"], mesh["fsdp"]) == (1, -1)
  assert os.listdir(wd / "checkpoints") == ["3"]


@pytest.mark.parametrize("name", ["01_quickstart", "02_ablations", "03_scaling_up"])
def test_each_form_has_its_own_workdir(name, monkeypatch):
  """The reduced form never resumes or deletes the full form's runs: the parameters cell (run
  as the notebook runs it) gives each form its own default workdir."""
  nb = nbformat.read(os.path.join(HERE, f"{name}.ipynb"), as_version=4)
  params = next(c.source for c in nb.cells if c.cell_type == "code" and "WORKDIR =" in c.source)
  monkeypatch.delenv("RLP_NOTEBOOK_WORKDIR", raising=False)
  found = {}
  for fast in ("0", "1"):
    monkeypatch.setenv("RLP_NOTEBOOK_FAST", fast)
    scope = {"os": os, "REPO": "/repo"}
    exec(params, scope)  # noqa: S102 (the notebook's own cell)
    found[fast] = scope["WORKDIR"]
  assert found["0"] != found["1"] and all(w.startswith("/repo/workdirs/") for w in found.values())
