"""Two local CPU processes with jax.distributed (gloo): train, checkpoint, resume; SIGTERM to one
process stops both at the same checkpoint; a dead peer makes the survivor exit non-zero within
60 s instead of hanging."""

import itertools
import json
import os
import re
import socket
import subprocess
import sys
import time

import pytest
from conftest import xla_flags_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_LAUNCHES = itertools.count()
pytestmark = [pytest.mark.slow, pytest.mark.serial]


def _port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _launch(workdir, steps, fault=None):
  """Two processes of one run; each one's output goes to a file beside the workdir (kept for a
  failure's report: the first error often scrolls far out of the tail)."""
  port = _port()
  # two devices per process, the suite's other XLA flags (its fast compile)
  env = dict(os.environ, XLA_FLAGS=xla_flags_for(2),
             JAX_PLATFORMS="cpu", RLP_HEARTBEAT_TIMEOUT="10")
  cmd = ["tests/faults.py", fault] if fault else ["-m", "launch.train"]
  procs = []
  launch = next(_LAUNCHES)
  for i in range(2):
    out = open(f"{workdir}.launch{launch}.process{i}.log", "w+")
    procs.append(subprocess.Popen(
        [sys.executable, *cmd, "--config=configs/tiny.py", f"--workdir={workdir}",
         f"--config.train.steps={steps}", "--config.train.checkpoint_every=3",
         "--config.train.progress=false", "--config.train.plot=false",
         f"--coordinator=localhost:{port}", "--num_processes=2", f"--process_id={i}"],
        cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, text=True))
    procs[-1].log = out
  return procs


def _wait(procs, timeout):
  """Waits for both processes; returns their outputs."""
  outs = []
  for p in procs:
    p.wait(timeout=timeout)
    p.log.seek(0)
    outs.append(p.log.read())
    p.log.close()
  return outs


def _report(outs):
  """Both processes' first errors and last lines, for an assertion message."""
  parts = []
  for i, o in enumerate(outs):
    lines = o.splitlines()
    first = next((j for j, l in enumerate(lines)
                  if re.search(r"Traceback|Error|error|Check failure|Fatal", l)), None)
    head = "" if first is None else "\n".join(lines[max(0, first - 5):first + 40])
    parts.append(f"--- process {i}: first error ---\n{head}\n--- process {i}: last lines ---\n"
                 + "\n".join(lines[-25:]))
  return "\n".join(parts)


def _connected_late(out):
  """Gloo connections made after the start-up warm-up (each one can time out at 30 s when the
  processes arrive apart: rlp.sharding.open_collectives)."""
  lines = out.splitlines()
  ready = next(i for i, l in enumerate(lines) if "rlp: collectives connected" in l)
  return [l for l in lines[ready:] if "[Gloo]" in l and "connected" in l]


def test_two_processes_train_checkpoint_and_resume(tmp_path):
  wd = str(tmp_path / "run")
  procs = _launch(wd, 6)
  outs = _wait(procs, 400)
  assert [p.returncode for p in procs] == [0, 0], _report(outs)
  assert sorted(os.listdir(os.path.join(wd, "checkpoints"))) == ["3", "6"]
  assert [_connected_late(o) for o in outs] == [[], []]
  procs = _launch(wd, 8)
  outs = _wait(procs, 400)
  assert [p.returncode for p in procs] == [0, 0], _report(outs)
  assert [_connected_late(o) for o in outs] == [[], []]
  assert all("resumed from" in o and "step 6" in o for o in outs)
  with open(os.path.join(wd, "metrics.jsonl")) as f:
    steps = [json.loads(l)["step"] for l in f if '"loss"' in l]
  assert steps == list(range(1, 9))  # one writer (process 0), no duplicates
  # process 0 alone keeps the changed config (both renaming one shared file raced)
  assert json.load(open(os.path.join(wd, "config.until-step-6.json")))["train"]["steps"] == 6
  assert json.load(open(os.path.join(wd, "config.json")))["train"]["steps"] == 8
  # a rerun of the finished run: both processes take process 0's view of what is owed
  n_lines = len(open(os.path.join(wd, "metrics.jsonl")).readlines())
  procs = _launch(wd, 8)
  outs = _wait(procs, 400)
  assert [p.returncode for p in procs] == [0, 0], _report(outs)
  assert len(open(os.path.join(wd, "metrics.jsonl")).readlines()) == n_lines


def _stream(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [{k: v for k, v in json.loads(l).items() if not k.startswith("perf/")} for l in f]


def test_sigterm_to_one_process_stops_both_at_the_same_checkpoint(tmp_path):
  wd = str(tmp_path / "run")
  procs = _launch(wd, 8, fault="4:TERM:1")
  t = time.time()
  try:
    outs = _wait(procs, 300)
  except subprocess.TimeoutExpired:
    for p in procs:
      p.kill()
    pytest.fail("SIGTERM to one process left the run hanging")
  assert [p.returncode for p in procs] == [143, 143], _report(outs)
  assert all("checkpoint at step 4 written" in o for o in outs)
  assert "4" in os.listdir(os.path.join(wd, "checkpoints"))
  procs = _launch(wd, 8)
  outs = _wait(procs, 400)
  assert [p.returncode for p in procs] == [0, 0], _report(outs)
  assert all("step 4" in o for o in outs)
  ref = str(tmp_path / "ref")
  procs = _launch(ref, 8)
  outs = _wait(procs, 400)
  assert [p.returncode for p in procs] == [0, 0], _report(outs)
  assert _stream(wd) == _stream(ref)  # the preempted-and-resumed run is the uninterrupted one
  assert time.time() - t < 1200


def test_dead_peer_makes_survivor_exit(tmp_path):
  procs = _launch(str(tmp_path / "run"), 500, fault="4:KILL:1")
  procs[1].wait(timeout=400)
  assert procs[1].returncode == -9
  t = time.time()
  try:
    out = _wait(procs[:1], 60)[0]
  except subprocess.TimeoutExpired:
    procs[0].kill()
    pytest.fail("the surviving process hung for 60 s after its peer died")
  assert procs[0].returncode != 0
  assert "another task died" in out or "heartbeat" in out
  assert time.time() - t < 60
