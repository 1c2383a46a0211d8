"""kill -9 and SIGTERM of a real rlp-train process, and resume with the same command."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASE = ["--config=configs/tiny.py", "--config.train.steps=10", "--config.train.checkpoint_every=4",
        "--config.train.progress=false", "--config.train.eval_docs=0", "--config.train.plot=false"]


def _train(workdir, fault=None, extra=()):
  """rlp-train; with `fault` (tests/faults.py) the run gets that signal at that point."""
  cmd = ["tests/faults.py", fault] if fault else ["-m", "launch.train"]
  return subprocess.run([sys.executable, *cmd, *BASE, *extra, f"--workdir={workdir}"], cwd=ROOT,
                        capture_output=True, text=True, timeout=600)


def _stream(workdir):
  """The metric stream without timing figures (perf/*), which differ between runs."""
  rows = []
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    for line in f:
      r = json.loads(line)
      rows.append({k: v for k, v in r.items() if not k.startswith("perf/")})
  return rows


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  wd = str(tmp_path_factory.mktemp("ref") / "run")
  r = _train(wd)
  assert r.returncode == 0, r.stderr[-3000:]
  return _stream(wd)


def test_kill_9_then_resume_gives_the_uninterrupted_stream(tmp_path, uninterrupted):
  wd = str(tmp_path / "run")
  # killed after step 9: the save of step 8 may be half-written (async), the one of step 4 is
  # committed (orbax finishes a save before starting the next)
  r = _train(wd, fault="9:KILL")
  assert r.returncode == -9
  assert "4" in os.listdir(os.path.join(wd, "checkpoints"))
  r = _train(wd)
  assert r.returncode == 0, r.stderr[-3000:]
  assert "resumed from" in r.stderr
  assert _stream(wd) == uninterrupted  # bitwise: same floats, same steps


def test_sigterm_checkpoints_and_exits_cleanly(tmp_path, uninterrupted):
  wd = str(tmp_path / "run")
  r = _train(wd, fault="6:TERM")
  assert r.returncode == 128 + 15, r.stderr[-3000:]  # interrupted, not finished (README)
  assert "SIGTERM received" in r.stderr and "checkpoint at step 6 written" in r.stderr
  assert "6" in os.listdir(os.path.join(wd, "checkpoints"))
  r = _train(wd)
  assert r.returncode == 0 and "step 6" in r.stderr
  assert _stream(wd) == uninterrupted


def test_rerun_after_kill_before_the_final_eval_completes_what_the_run_owed(tmp_path):
  """kill -9 after the final checkpoint, before the final eval and curves: the rerun writes them
  (an uninterrupted run's outputs), and a further rerun only says the run is complete."""
  wd = str(tmp_path / "run")
  extra = ("--config.train.eval_docs=2", "--config.train.eval_positions=1",
           "--config.train.plot=true")
  r = _train(wd, fault="final-eval:KILL", extra=extra)
  assert r.returncode == -9
  rows = _stream(wd)
  assert [x["step"] for x in rows] == list(range(1, 11))  # every step, no eval row yet
  assert not os.path.exists(os.path.join(wd, "curves.png"))
  r = _train(wd, extra=extra)
  assert r.returncode == 0, r.stderr[-3000:]
  assert "final eval was not written" in r.stderr
  rows = _stream(wd)
  assert [x["step"] for x in rows] == list(range(1, 11)) + [10]
  assert "eval/nll" in rows[-1] and "eval/information_gain" in rows[-1]
  assert os.path.exists(os.path.join(wd, "curves.png"))
  r = _train(wd, extra=extra)
  assert r.returncode == 0 and "already complete" in r.stderr
  assert len(_stream(wd)) == 11


def test_reference_resets_survive_kill_and_resume(tmp_path):
  """ref_reset_every=4 with checkpoints every 4 steps: preempted at step 4 (checkpoint written,
  the reset after it not yet applied), the resumed run applies the reset before step 5 and its
  stream equals an uninterrupted run's (event rows included, no duplicates)."""
  extra = ("--config.rlp.kl_beta=0.1", "--config.rlp.ref_reset_every=4")
  ref = str(tmp_path / "ref")
  r = _train(ref, extra=extra)
  assert r.returncode == 0, r.stderr[-3000:]
  want = _stream(ref)
  assert [x["step"] for x in want if "event/ref_reset" in x] == [4, 8]
  assert "reference reset after step 4" in r.stderr
  wd = str(tmp_path / "run")
  r = _train(wd, fault="4:TERM", extra=extra)
  assert r.returncode == 143, r.stderr[-3000:]
  r = _train(wd, extra=extra)
  assert r.returncode == 0, r.stderr[-3000:]
  assert "resumed from" in r.stderr and "step 4" in r.stderr
  assert _stream(wd) == want


def test_a_full_disk_is_one_clear_error_and_keeps_what_was_written(tmp_path, monkeypatch):
  """A checkpoint that cannot fit is refused before any of it is written, naming the sizes and
  the step to resume from; a write that fails in orbax's threads surfaces as one CheckpointError
  line, the earlier checkpoints untouched."""
  import jax.numpy as jnp
  import shutil
  from rlp import checkpoint
  ck = checkpoint.Checkpointer(str(tmp_path / "ck"), async_save=False)
  state = {"w": jnp.ones((256, 256), jnp.float32)}  # 256 KiB
  ck.save(4, state, None, {"step": 4})
  ck.wait()
  real = shutil.disk_usage
  monkeypatch.setattr(checkpoint.shutil, "disk_usage",
                      lambda p: real(p)._replace(free=100_000))
  with pytest.raises(checkpoint.CheckpointError,
                     match=r"not enough disk space for the checkpoint of step 8 in .*ck: it needs "
                           r"about 0.00 GiB and 0.00 GiB are free; .* resume from step 4"):
    ck.save(8, state, None, {"step": 8})
  assert ck.steps() == [4] and not any("8" in n for n in os.listdir(tmp_path / "ck"))
  monkeypatch.setattr(checkpoint.shutil, "disk_usage", real)

  def fail():
    raise ValueError("RESOURCE_EXHAUSTED: Failed writing: No space left on device\nmore lines")
  monkeypatch.setattr(ck._mgr, "wait_until_finished", fail)
  with pytest.raises(checkpoint.CheckpointError) as e:
    ck.wait()
  assert "No space left on device; the checkpoints already there ([4]) are untouched" in str(e.value)
  assert "more lines" not in str(e.value)
  monkeypatch.undo()
  ck.close()


def test_checkpoints_are_written_in_the_background_only_off_the_cpu():
  """On the CPU the state already lives in host memory and the writer shares the step's cores: a
  run waits for its save. With an accelerator in the mesh it writes in the background."""
  import types
  import jax
  import numpy as np
  from rlp import checkpoint
  assert not checkpoint.async_pays(jax.sharding.Mesh(np.array(jax.devices()), ("data",)))
  gpu = types.SimpleNamespace(devices=np.array([types.SimpleNamespace(platform="gpu")] * 2))
  assert checkpoint.async_pays(gpu)
