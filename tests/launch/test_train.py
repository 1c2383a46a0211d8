"""rlp-train end to end on configs/tiny.py: RLP, CPT, RPT, resume, plots, bad configs, launchers."""

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import faults  # tests/faults.py
from configs import tiny
from rlp import configuration, loop, metrics
from rlp import workdir as workdir_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tiny_config(**overrides):
  c = tiny.get_config()
  c.train.progress = False
  c.train.steps = 4
  c.train.checkpoint_every = 2
  c.update_from_flattened_dict(overrides)
  return c


@pytest.mark.parametrize("objective", ["rlp", "cpt", "rpt"])
def test_train_writes_outputs_and_resumes(objective, tmp_path, monkeypatch):
  wd = str(tmp_path / objective)
  from rlp import checkpoint
  made = []
  real = checkpoint.Checkpointer
  monkeypatch.setattr(checkpoint, "Checkpointer", lambda *a, **k: made.append(k) or real(*a, **k))
  out = loop.train(tiny_config(objective=objective), wd)
  # on the CPU the run waits for each save (no background copy of the state beside the step)
  assert made == [{"async_save": False}]
  rows = metrics.read_metrics(wd)
  steps = [r["step"] for r in rows if "loss" in r]
  assert steps == [1, 2, 3, 4]
  assert all(r["loss"] is not None for r in rows if "loss" in r)
  assert "perf/mfu" in rows[0] and "perf/tokens_per_sec" in rows[0]
  if objective != "cpt":
    for key in ("rlp/reward_mean", "rlp/thought_len_mean", "rlp/truncated_frac", "rlp/entropy",
                "rlp/clip_frac"):
      assert key in rows[0], key
  assert sorted(os.listdir(os.path.join(wd, "checkpoints")))[-2:] == ["2", "4"]
  assert os.listdir(os.path.join(wd, "tb"))
  assert os.path.exists(os.path.join(wd, "curves.png"))
  assert json.load(open(os.path.join(wd, "config.json")))["objective"] == objective
  assert out["step"] == 4
  # re-running a finished run changes nothing; with more steps it resumes at step 5
  n_lines = len(metrics.read_metrics(wd))
  assert loop.train(tiny_config(objective=objective), wd) == {}
  assert len(metrics.read_metrics(wd)) == n_lines
  loop.train(tiny_config(objective=objective, **{"train.steps": 6}), wd)
  steps = [r["step"] for r in metrics.read_metrics(wd) if "loss" in r]
  assert steps == [1, 2, 3, 4, 5, 6]
  assert os.path.exists(os.path.join(wd, "config.until-step-4.json"))


def test_in_run_eval_positions_are_fixed_at_the_start(tmp_path):
  """The in-run thought eval scores the same positions at every eval: chosen once, by the model
  the run started from (here its lowest no-thought log-probs), saved in the workdir, reused on
  resume, and the same for a CPT twin from the same start; each eval row has the gain over
  every placebo with its interval."""
  from rlp import evaluate, thought_eval
  over = {"data.selection": "low_logp", "train.eval_every": 2, "optim.lr": 1e-2}
  wd, twin = str(tmp_path / "rlp"), str(tmp_path / "cpt")
  loop.train(tiny_config(**over), wd)
  path = os.path.join(wd, "eval_positions.json")
  saved = json.load(open(path))
  assert saved["positions"]["selected_by"] == "low_logp under the model the run started from"
  c = tiny_config(**over)
  model, tok = configuration.load_model_and_tokenizer(c)
  docs = evaluate.InRunEval.documents(c, tok)
  sel = thought_eval.Selection("low_logp", c.train.eval_positions, c.data.min_prefix)
  start = thought_eval.choose(docs, c.data.seq_len, sel, model, "start")
  assert saved["positions"]["t"] == start.t.tolist()
  rows = [r for r in metrics.read_metrics(wd) if "eval/information_gain" in r]
  assert [r["step"] for r in rows] == [0, 2, 4]
  for r in rows:
    for name in thought_eval.PLACEBOS:
      lo, hi = r[f"eval/gain_over_placebo/{name}_ci"]
      assert lo <= r[f"eval/gain_over_placebo/{name}"] <= hi
  loop.train(tiny_config(**{**over, "objective": "cpt"}), twin)
  assert json.load(open(os.path.join(twin, "eval_positions.json"))) == saved
  before = open(path).read()
  loop.train(tiny_config(**{**over, "train.steps": 6}), wd)  # resumed: the file is reused
  assert open(path).read() == before


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  wd = str(tmp_path_factory.mktemp("resume") / "run")
  loop.train(tiny_config(**{"train.steps": 2, "train.eval_docs": 0, "train.plot": False}), wd)
  return wd


@pytest.mark.parametrize("override,field", [
    ({"warmup.steps": 2, "warmup.source": "thoughts:reasoning:train"}, "warmup.steps"),
    ({"objective": "cpt"}, "objective"),
    ({"data.source": "toy:train"}, "data.source"),
    ({"data.selection": "low_logp"}, "data.selection"),
    ({"data.seq_len": 48}, "data.seq_len"),
    ({"data.batch_size": 16}, "data.batch_size"),
    ({"rlp.template": "Think: "}, "rlp.template"),
    ({"seed": 3}, "seed"),
])
def test_resume_refuses_a_changed_structure(finished_run, override, field):
  before = {n: open(os.path.join(finished_run, n), "rb").read()
            for n in os.listdir(finished_run) if os.path.isfile(os.path.join(finished_run, n))}
  c = tiny_config(**{"train.steps": 4, "train.eval_docs": 0, "train.plot": False, **override})
  with pytest.raises(configuration.ConfigError, match=f"{field}: .* -> ") as e:
    loop.train(c, finished_run)
  assert "To resume it, rerun with its values" in str(e.value) and "\n" not in str(e.value)
  after = {n: open(os.path.join(finished_run, n), "rb").read()
           for n in os.listdir(finished_run) if os.path.isfile(os.path.join(finished_run, n))}
  assert after == before


def test_resume_honours_steps_cadence_logging_and_lr(tmp_path):
  wd = str(tmp_path / "run")
  common = {"train.eval_docs": 0, "train.plot": False}
  loop.train(tiny_config(**{**common, "train.steps": 2}), wd)
  out = loop.train(tiny_config(**{**common, "train.steps": 4, "train.checkpoint_every": 1,
                                  "train.log_every": 2, "train.eval_every": 2,
                                  "optim.lr": 3e-4}), wd)
  assert out["step"] == 4
  assert [r["step"] for r in metrics.read_metrics(wd) if "loss" in r] == [1, 2, 4]
  assert sorted(os.listdir(os.path.join(wd, "checkpoints")))[-2:] == ["3", "4"]


def test_only_process_0_writes_the_config(tmp_path, monkeypatch):
  """Every process of a multi-process run renaming and rewriting the shared config.json raced:
  one could find the file gone between its check and its read, fail, and hang the others."""
  wd = str(tmp_path)
  workdir_lib.write_config(tiny_config(), wd, 0, print)
  first = open(os.path.join(wd, "config.json")).read()
  monkeypatch.setattr(workdir_lib.jax, "process_index", lambda: 1)
  workdir_lib.write_config(tiny_config(**{"train.steps": 9}), wd, 4, print)
  assert sorted(os.listdir(wd)) == ["config.json"]
  assert open(os.path.join(wd, "config.json")).read() == first
  monkeypatch.setattr(workdir_lib.jax, "process_index", lambda: 0)
  workdir_lib.write_config(tiny_config(**{"train.steps": 9}), wd, 4, print)
  assert open(os.path.join(wd, "config.until-step-4.json")).read() == first
  assert json.load(open(os.path.join(wd, "config.json")))["train"]["steps"] == 9


def test_rlp_plot_cli(tmp_path):
  wd = tmp_path / "run"
  wd.mkdir()
  rows = [{"step": i, "loss": 1.0 / i, "rlp/reward_mean": 0.1 * i} for i in range(1, 6)]
  rows += [{"step": i, "reasoning/pass@8": 0.5, "reasoning/pass@1_no_thought": 0.1,
            "reasoning/pass@1": 0.2, "reasoning/pass@2": 0.3} for i in (0, 5)]
  (wd / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  from rlp import plot  # the pass@k panel draws whatever k were logged, in order of k
  assert plot._keys("reasoning/pass@", [("run", rows)]) == (
      "reasoning/pass@1", "reasoning/pass@2", "reasoning/pass@8", "reasoning/pass@1_no_thought")
  r = subprocess.run([sys.executable, "-m", "launch.plot", str(wd)], cwd=ROOT,
                     capture_output=True, text=True)
  assert r.returncode == 0, r.stderr
  assert r.stdout.strip() == str(wd / "curves.png") and (wd / "curves.png").stat().st_size > 1000
  out = tmp_path / "cmp.png"
  r = subprocess.run([sys.executable, "-m", "launch.plot", str(wd), str(wd), f"--out={out}"],
                     cwd=ROOT, capture_output=True, text=True)
  assert r.returncode == 0 and out.exists()
  r = subprocess.run([sys.executable, "-m", "launch.plot", str(tmp_path / "nope")], cwd=ROOT,
                     capture_output=True, text=True)
  assert r.returncode == 2 and "no metrics.jsonl" in r.stderr


@pytest.mark.parametrize("override,message", [
    ({"rlp.group_size": 1}, r"config.rlp.group_size = 1 is invalid: must be >= 2"),
    ({"rlp.max_thought_len": -3}, r"config.rlp.max_thought_len = -3 is invalid"),
    ({"data.seq_len": -1}, r"config.data.seq_len = -1 is invalid"),
    ({"objective": "sft"}, r"config.objective = 'sft' is invalid: must be rlp \| cpt \| rpt"),
    ({"mesh.data": 3}, r"config.mesh = \(3, 1, 1\) is invalid: .*does not divide the 8 devices"),
    ({"warmup.steps": 3}, r"config.warmup.source = '\"\"' is invalid: must be a data source"),
    ({"data.selection": "marker"}, r"config.data.position_marker = '\"\"' is invalid"),
    ({"data.selection": "best"}, r"config.data.selection = 'best' is invalid: must be uniform"),
    ({"train.eval_reasoning_every": 2, "train.eval_reasoning_ks": (1, 16)},
     r"config.train.eval_reasoning_ks = \(1, 16\) is invalid: must be non-empty, each k in "
     r"\[1, train.eval_reasoning_samples \(8\)\]"),
    ({"train.eval_reasoning_every": 2, "data.eval_source": ""},
     r"config.train.eval_positions = 2 is invalid: .*a data.eval_source"),
    ({"rlp.ref_reset_on_plateau": 2, "train.eval_every": 0},
     r"config.train.eval_every = 0 is invalid: must be > 0 with rlp.ref_reset_on_plateau"),
    ({"rlp.ref_reset_every": -1}, r"config.rlp.ref_reset_every = -1 is invalid: must be >= 0"),
    ({"objective": "cpt", "rlp.reward_tokens": 2},
     r"config.rlp.reward_tokens = 2 is invalid: must be 1 unless objective=rlp"),
    ({"rlp.reward_tokens": 0}, r"config.rlp.reward_tokens = 0 is invalid: must be >= 1"),
    ({"rlp.rollout_batch": 3}, r"config.rlp.rollout_batch = 3 is invalid: must be 0 \(the "
     r"whole batch\) or a divisor of data.batch_size \(8\)"),
    ({"rlp.rollout_batch": 4}, r"config.rlp.rollout_batch = 4 is invalid: must be a multiple of "
     r"mesh data x fsdp \(8\)"),
    ({"model.init": "gguf", "model.path": "/nonexistent/model.gguf"},
     r"config.model.path = '/nonexistent/model.gguf' is invalid: must be an existing file"),
])
def test_invalid_configs_fail_before_compiling(override, message, tmp_path):
  with pytest.raises(configuration.ConfigError, match=message):
    loop.train(tiny_config(**override), str(tmp_path / "bad"))
  assert not (tmp_path / "bad").exists()  # nothing was created


def test_step_settings_have_one_source(tmp_path):
  """Every config field is defined once, in rlp/schema.py: configs/base.py is derived from it,
  StepConfig / SamplerConfig take their run fields' defaults and rules from it, and the config
  check reports the same rules; a workdir's config written before a key existed still loads."""
  import ast
  import dataclasses
  from configs import base
  from models.tokenizer import load_tokenizer
  from rlp import sampler, schema, trainer
  assert base.get_config().to_json() == schema.config_dict().to_json()
  c = base.get_config()
  c.rlp.eps_high, c.rlp.grad_accum, c.data.min_prefix, c.train.loss_chunk = 0.3, 2, 5, 64
  step = configuration.step_config(c, load_tokenizer("bytes"))
  run_fields = schema.run_fields(trainer.StepConfig)
  for name, path in run_fields:
    assert getattr(step, name) == schema.value(c, path), name
  assert (step.eps_high, step.grad_accum, step.min_prefix, step.loss_chunk) == (0.3, 2, 5, 64)
  # a StepConfig field is a run field or one of the few derived from the run (nothing else can
  # grow a second default); the library's defaults are the schema's
  derived = {"sampler", "truncated_reward", "baseline_exclude", "ema_head_at_positions"}
  assert {f.name for f in dataclasses.fields(trainer.StepConfig)} == \
      {n for n, _ in run_fields} | derived
  for cls in (trainer.StepConfig, sampler.SamplerConfig):
    for f in dataclasses.fields(cls):
      if "config" in f.metadata:
        assert f.default == schema.default(f.metadata["config"]), f.name
  assert {p for _, p in schema.run_fields(sampler.SamplerConfig)} == {
      f"rlp.{n}" for n in ("group_size", "max_thought_len", "min_thought_len", "temperature",
                           "top_k", "top_p")}
  # no module but the schema (and its machinery, settings.py) assigns a config field's default:
  # the experiment files only override, and no library file builds a ConfigDict of its own
  for path in glob.glob(os.path.join(ROOT, "rlp", "*.py")) + glob.glob(
      os.path.join(ROOT, "configs", "base.py")):
    if path.endswith(("schema.py", "settings.py")):
      continue
    tree = ast.parse(open(path).read())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(
        n.func, "attr", getattr(n.func, "id", "")) == "ConfigDict"]
    assert not calls, f"{path} builds a ConfigDict: config fields are defined in rlp/schema.py"
  with pytest.raises(ValueError, match=r"ema_tau = 2 \(must be in \[0, 1\]\)"):
    trainer.StepConfig(ema_tau=2)
  c.rlp.ema_tau, c.rlp.eps_low = 2.0, 1.5
  with pytest.raises(configuration.ConfigError) as e:
    configuration.validate(c)
  assert "config.rlp.ema_tau = 2.0 is invalid: must be in [0, 1]" in str(e.value)
  assert "config.rlp.eps_low = 1.5 is invalid: must be in [0, 1)" in str(e.value)
  with pytest.raises(ValueError, match=r"top_p = 0.0 \(must be in \(0, 1\]\)"):
    sampler.SamplerConfig(top_p=0.0)
  assert sampler.SamplerConfig(group_size=1).group_size == 1  # evaluation samples one thought
  c.rlp.top_p = 0.0
  with pytest.raises(configuration.ConfigError, match=r"config.rlp.top_p = 0.0 is invalid: "
                                                      r"must be in \(0, 1\]"):
    configuration.validate(c)
  # the typed run: parse gives the schema's dataclasses, and building one checks its rules
  run = schema.parse(base.get_config())
  assert run.rlp.group_size == 4 and run.train.eval_placebos == schema.PLACEBOS
  with pytest.raises(schema.ConfigError, match=r"config.rlp.kl_estimator = 'k9' is invalid"):
    schema.RLP(kl_estimator="k9")
  with pytest.raises(schema.ConfigError, match=r"config.data.min_prefix = 300 is invalid: "
                                               r"must be < data.seq_len \(256\)"):
    schema.Run(data=schema.Data(min_prefix=300))
  with pytest.raises(schema.ConfigError, match=r"config.rlp.temperature = 'hot' is invalid: "
                                               r"must be >= 0"):
    schema.RLP(temperature="hot")
  saved = json.loads(base.get_config().to_json())
  del saved["rlp"]["rollout_batch"]  # a key added after this run was written
  saved["train"]["eval_reasoning_ks"] = [1, 2]  # JSON's list for a tuple
  (tmp_path / "config.json").write_text(json.dumps(saved))
  old = configuration.load_run_config(str(tmp_path))
  assert old.rlp.rollout_batch == 0 and old.train.eval_reasoning_ks == (1, 2)
  assert schema.parse(old).train.eval_reasoning_ks == (1, 2)
  with pytest.raises(configuration.ConfigError, match="cannot be read as a run's config"):
    configuration.load_run_config(str(tmp_path / "nope"))


def test_every_shipped_config_holds_the_schema():
  """Every experiment file and every ablation sweep entry parses into the typed run (the model
  files named by the large configs need not exist here: the schema's rules are about values)."""
  import importlib.util
  from rlp import schema
  paths = sorted(glob.glob(os.path.join(ROOT, "configs", "*.py")) +
                 glob.glob(os.path.join(ROOT, "configs", "ablations", "[a-z]*.py")))
  seen = 0
  for path in paths:
    spec = importlib.util.spec_from_file_location("experiment", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    if not hasattr(mod, "get_config") or path.endswith("base.py"):
      continue
    for ov in getattr(mod, "get_sweep", lambda: [{}])():
      c = mod.get_config()
      c.update_from_flattened_dict({k: v for k, v in ov.items() if k != "name"})
      assert isinstance(schema.parse(c), schema.Run), path
      seen += 1
  assert seen >= 20
  c = tiny.get_config()
  c.mesh.fsdp, c.mesh.data = -1, 1  # any one axis may take the devices the others leave
  assert schema.parse(c).mesh.fsdp == -1


def test_cli_error_is_one_line_per_field(tmp_path):
  r = subprocess.run([sys.executable, "-m", "launch.train", "--config=configs/tiny.py",
                      f"--workdir={tmp_path}/w", "--config.rlp.group_size=1",
                      "--config.rlp.temperature=-1"], cwd=ROOT, capture_output=True, text=True,
                     timeout=300)
  assert r.returncode == 2
  errs = [l for l in r.stderr.splitlines() if "is invalid" in l]
  assert len(errs) == 2 and "rlp.group_size" in errs[0] and "rlp.temperature" in errs[1]


def test_launcher_dry_runs(tmp_path):
  r = subprocess.run(["bash", "launch/slurm.sbatch", "--dry-run", "configs/qwen3_1p7b_rlp.py",
                      "/runs/q", "--config.model.path=/ckpt"], cwd=ROOT, capture_output=True,
                     text=True)
  assert r.returncode == 0
  assert r.stdout.startswith("srun --kill-on-bad-exit=1 --gpus-per-task=1 env ")
  assert "rlp-train --config=configs/qwen3_1p7b_rlp.py --workdir=/runs/q --config.model.path=/ckpt" in r.stdout
  assert "#SBATCH --signal=B:TERM@120" in open(os.path.join(ROOT, "launch/slurm.sbatch")).read()
  r = subprocess.run(["bash", "launch/tpu_pod.sh", "--dry-run", "v5p-64", "us-east5-a",
                      "configs/llama3_8b_rlp_tpu.py", "/mnt/gcs/run"], cwd=ROOT,
                     capture_output=True, text=True)
  assert r.returncode == 0
  assert "gcloud compute tpus tpu-vm ssh v5p-64 --zone=us-east5-a --worker=all" in r.stdout
  assert "rlp-train\\ --config=configs/llama3_8b_rlp_tpu.py\\ --workdir=/mnt/gcs/run" in r.stdout
  assert "make\\ venv-tpu" in r.stdout  # the TPU build of JAX, not the CPU test stack
  sys.path.insert(0, ROOT)
  from launch import sweep
  cmds = sweep.main(["configs/ablations/group_size.py", "--dry-run", "--workdir=w",
                     "--", "--config.train.steps=3"])
  assert cmds[0] == ["rlp-train", "--config=configs/ablations/group_size.py",
                     "--workdir=w/group_size=2", "--config.rlp.group_size=2",
                     "--config.train.steps=3"]
  assert len(cmds) == 4
  slurm = sweep.main(["configs/ablations/ema_tau.py", "--dry-run", "--launcher=slurm"])
  assert slurm[0][:3] == ["sbatch", "launch/slurm.sbatch", "configs/ablations/ema_tau.py"]
  # every ablation config expands into valid configs; named entries name their run directory
  import glob
  import importlib.util
  for path in sorted(glob.glob(os.path.join(ROOT, "configs", "ablations", "[a-z]*.py"))):
    spec = importlib.util.spec_from_file_location("ablation", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for ov in mod.get_sweep():
      c = mod.get_config()
      c.update_from_flattened_dict({k: v for k, v in ov.items() if k != "name"})
      configuration.validate(c)
  sel = sweep.main(["configs/ablations/data_selection.py", "--dry-run", "--workdir=w"])
  assert [c[2] for c in sel] == ["--workdir=w/gvendi", "--workdir=w/random"]
  assert sel[0][3] == "--config.data.source=arrayrecord:workdirs/select/gvendi"
  dup = tmp_path / "dup.py"
  dup.write_text("def get_sweep():\n  return [{'name': 'a'}, {'name': 'a', 'rlp.kl_beta': 0.1}]\n")
  with pytest.raises(SystemExit, match="must be unique"):
    sweep.commands(str(dup), "w", "local", [])


def test_run_stops_after_consecutive_non_finite_updates(tmp_path):
  # lr 1e30 turns the params into inf after one update; every later update is skipped
  c = tiny_config(objective="cpt", **{"optim.lr": 1e30, "optim.grad_clip": 0.0,
                                      "train.steps": 10, "train.max_consecutive_skips": 3})
  with pytest.raises(loop.TrainingError, match="3 consecutive updates had a non-finite"):
    loop.train(c, str(tmp_path / "nan"))
  rows = [r for r in metrics.read_metrics(str(tmp_path / "nan")) if "skipped" in r]
  assert rows[0]["skipped"] == 0 and all(r["skipped"] == 1 for r in rows[-3:])


def test_warmup_then_rlp_from_its_checkpoint(tmp_path):
  """The thought-format warm-up (CPT on <think>-formatted text), then RLP initialised from it."""
  warm = str(tmp_path / "warm")
  c = tiny_config(objective="cpt", **{"data.source": "reasoning_thought:train"})
  loop.train(c, warm)
  rlp = tiny_config(**{"model.init": "checkpoint", "model.path": warm, "train.steps": 2})
  out = loop.train(rlp, str(tmp_path / "rlp"))
  assert out["step"] == 2
  # the RLP run started from the warm-up's weights: its EMA (tau 0.999, two updates) is the
  # warm-up's final params up to 0.2% of the way to the new ones, far from a fresh init
  import jax
  from flax import nnx
  from rlp import evaluate

  def leaves(model):
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]
  warm_p = leaves(evaluate.load_for_eval(warm)[0])
  ema = leaves(evaluate.load_for_eval(str(tmp_path / "rlp"), use_ema=True)[0])
  fresh = leaves(configuration.load_model_and_tokenizer(tiny_config())[0])
  dist = lambda a, b: sum(float(np.abs(x - y).sum()) for x, y in zip(a, b))  # noqa: E731
  assert dist(ema, warm_p) < 1e-3 * dist(fresh, warm_p), (dist(ema, warm_p), dist(fresh, warm_p))


TOY = {"warmup.steps": 2, "warmup.source": "toy:train:0.5", "data.source": "toy:train",
       "data.eval_source": "toy:eval", "data.selection": "marker", "data.position_marker": "=",
       "data.min_prefix": 8, "train.steps": 2, "train.checkpoint_every": 1, "train.eval_docs": 4,
       "train.eval_every": 0, "train.plot": False, "train.eval_reasoning_every": 2,
       "train.eval_reasoning_samples": 4, "train.eval_reasoning_ks": (1, 2, 4)}


def _stream(wd):
  return [{k: v for k, v in r.items() if not k.startswith("perf/")}
          for r in metrics.read_metrics(wd)]


def test_format_warmup_inside_one_run(tmp_path, monkeypatch):
  """warmup.steps next-token steps on warmup.source, then RLP in the same run: named metrics, a
  held-out thought eval at the switch and the end, pass@k rows at step 0 and every 2 steps, the
  EMA restarted from the warmed-up params, and a run stopped at the switch resumes into the same
  stream (its pass@k rows included)."""
  import orbax.checkpoint as ocp
  wd = str(tmp_path / "a")
  loop.train(tiny_config(**TOY), wd)
  rows = metrics.read_metrics(wd)
  train_rows = [r for r in rows if "loss" in r]
  assert [r["step"] for r in train_rows] == [1, 2, 3, 4]
  assert all("warmup/nll" in r and "rlp/reward_mean" not in r for r in train_rows[:2])
  assert all("rlp/reward_mean" in r and "warmup/nll" not in r for r in train_rows[2:])
  assert [r["step"] for r in rows if "eval/information_gain" in r] == [2, 4]
  reasoning = [r for r in rows if "reasoning/pass@1" in r]
  assert [r["step"] for r in reasoning] == [0, 2, 4]
  for r in reasoning:
    assert 0 <= r["reasoning/pass@1"] <= r["reasoning/pass@2"] <= r["reasoning/pass@4"] <= 1
    assert r["reasoning/samples"] == 4 and r["reasoning/problems"] == 8  # 4 docs x 2 positions
    assert "diversity/distinct_1" in r
    assert ("eval/nll" in r) == (r["step"] in (2, 4))  # step 0: pass@k only (eval_every = 0)
  ck = ocp.StandardCheckpointer()
  s2 = ck.restore(os.path.join(wd, "checkpoints", "2", "state"))
  s3 = ck.restore(os.path.join(wd, "checkpoints", "3", "state"))
  tau = tiny_config().rlp.ema_tau
  import jax
  for e3, p2, p3 in zip(jax.tree.leaves(s3["ema"]), jax.tree.leaves(s2["params"]),
                        jax.tree.leaves(s3["params"])):
    np.testing.assert_allclose(e3, tau * p2 + (1 - tau) * p3, rtol=1e-5, atol=1e-7)
  assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(s2["ema"]),
                                                  jax.tree.leaves(s2["params"])))
  # SIGTERM right at the switch (after step 2), then the same command resumes into steps 3, 4
  wd_b = str(tmp_path / "b")
  undo = faults.install("2:TERM")
  try:
    loop.train(tiny_config(**TOY), wd_b)
  finally:
    undo()
  assert [r["step"] for r in metrics.read_metrics(wd_b) if "loss" in r] == [1, 2]
  loop.train(tiny_config(**TOY), wd_b)
  assert _stream(wd_b) == _stream(wd)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tiny", "toy_reasoning", "smollm2_rlp", "smollm2_cpt",
                                  "smollm2_rpt"])
def test_shipped_configs_validate(name):
  import importlib
  c = importlib.import_module(f"configs.{name}").get_config()
  configuration.validate(c)
  if name == "smollm2_rpt":
    c.rlp.scorer_weight = 1.0
    with pytest.raises(configuration.ConfigError, match="rlp.scorer_weight"):
      configuration.validate(c)
