"""Two local CPU processes with jax.distributed (gloo): train, checkpoint, resume; SIGTERM to one
process stops both at the same checkpoint; a dead peer makes the survivor exit non-zero within
60 s instead of hanging."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = [pytest.mark.slow, pytest.mark.serial]


def _port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _launch(workdir, steps, fault=None):
  port = _port()
  # LLVM at -O0 as in the rest of the suite (tests/conftest.py): the same results, faster compiles
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2 "
             "--xla_backend_optimization_level=0",
             JAX_PLATFORMS="cpu", RLP_HEARTBEAT_TIMEOUT="10")
  env.pop("RLP_FAULT_AT_STEP", None)
  if fault:
    env["RLP_FAULT_AT_STEP"] = fault
  procs = []
  for i in range(2):
    procs.append(subprocess.Popen(
        [sys.executable, "-m", "launch.train", "--config=configs/tiny.py", f"--workdir={workdir}",
         f"--config.train.steps={steps}", "--config.train.checkpoint_every=3",
         "--config.train.progress=false", "--config.train.plot=false",
         f"--coordinator=localhost:{port}", "--num_processes=2", f"--process_id={i}"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
  return procs


def test_two_processes_train_checkpoint_and_resume(tmp_path):
  wd = str(tmp_path / "run")
  procs = _launch(wd, 6)
  outs = [p.communicate(timeout=400)[0] for p in procs]
  assert [p.returncode for p in procs] == [0, 0], outs[0][-3000:] + outs[1][-3000:]
  assert sorted(os.listdir(os.path.join(wd, "checkpoints"))) == ["3", "6"]
  procs = _launch(wd, 8)
  outs = [p.communicate(timeout=400)[0] for p in procs]
  assert [p.returncode for p in procs] == [0, 0], outs[0][-3000:] + outs[1][-3000:]
  assert all("resumed from" in o and "step 6" in o for o in outs)
  with open(os.path.join(wd, "metrics.jsonl")) as f:
    steps = [json.loads(l)["step"] for l in f if '"loss"' in l]
  assert steps == list(range(1, 9))  # one writer (process 0), no duplicates


def _stream(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [{k: v for k, v in json.loads(l).items() if not k.startswith("perf/")} for l in f]


def test_sigterm_to_one_process_stops_both_at_the_same_checkpoint(tmp_path):
  wd = str(tmp_path / "run")
  procs = _launch(wd, 8, fault="4:TERM:1")
  t = time.time()
  try:
    outs = [p.communicate(timeout=300)[0] for p in procs]
  except subprocess.TimeoutExpired:
    for p in procs:
      p.kill()
    pytest.fail("SIGTERM to one process left the run hanging")
  assert [p.returncode for p in procs] == [143, 143], outs[0][-3000:] + outs[1][-3000:]
  assert all("checkpoint at step 4 written" in o for o in outs)
  assert "4" in os.listdir(os.path.join(wd, "checkpoints"))
  procs = _launch(wd, 8)
  outs = [p.communicate(timeout=400)[0] for p in procs]
  assert [p.returncode for p in procs] == [0, 0], outs[0][-3000:]
  assert all("step 4" in o for o in outs)
  ref = str(tmp_path / "ref")
  procs = _launch(ref, 8)
  assert [p.communicate(timeout=400) and p.returncode for p in procs] == [0, 0]
  assert _stream(wd) == _stream(ref)  # the preempted-and-resumed run is the uninterrupted one
  assert time.time() - t < 1200


def test_dead_peer_makes_survivor_exit(tmp_path):
  procs = _launch(str(tmp_path / "run"), 500, fault="4:KILL:1")
  procs[1].wait(timeout=400)
  assert procs[1].returncode == -9
  t = time.time()
  try:
    out = procs[0].communicate(timeout=60)[0]
  except subprocess.TimeoutExpired:
    procs[0].kill()
    pytest.fail("the surviving process hung for 60 s after its peer died")
  assert procs[0].returncode != 0
  assert "another task died" in out or "heartbeat" in out
  assert time.time() - t < 60
