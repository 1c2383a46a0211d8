"""Fault injection for the fault-tolerance tests, kept out of the library: a real training run
gets a signal at a chosen point, as a kill -9 or a preemption would deliver it.

  python tests/faults.py STEP:KILL|TERM[:PROCESS] [rlp-train flags ...]

STEP: right after step STEP is dispatched (while it runs, before its metrics are read or its
checkpoint written); `final-eval`: after the last checkpoint is on disk, as the final eval starts.
PROCESS: only that process of a multi-process run. In a test's own process, `install(spec)`
patches the loop the same way and returns the function that undoes it."""

import os
import signal
import sys


def parse(spec: str):
  """(step or "final-eval", signal, process index or None) of a spec."""
  parts = spec.split(":")
  if len(parts) not in (2, 3) or parts[1] not in ("KILL", "TERM"):
    raise ValueError(f"fault spec {spec!r}: want STEP:KILL|TERM[:PROCESS]")
  at = parts[0] if parts[0] == "final-eval" else int(parts[0])
  return at, getattr(signal, f"SIG{parts[1]}"), int(parts[2]) if len(parts) == 3 else None


def install(spec: str):
  """Patches the training loop so this process gets the signal at the spec's point; returns the undo."""
  import jax
  from rlp import actions, steplog
  at, sig, process = parse(spec)

  def fire():
    if process is None or process == jax.process_index():
      os.kill(os.getpid(), sig)

  if at == "final-eval":
    cls, name = actions.HeldoutEval, "final"
    orig = cls.final

    def patched(self, params, step):
      fire()
      return orig(self, params, step)
  else:
    cls, name = steplog.StepLog, "record"
    orig = cls.record

    def patched(self, step, m, ro, batch):
      orig(self, step, m, ro, batch)
      if step == at:
        fire()
  setattr(cls, name, patched)
  return lambda: setattr(cls, name, orig)


if __name__ == "__main__":
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  install(sys.argv[1])
  from launch import train
  sys.argv = ["rlp-train", *sys.argv[2:]]
  train.run()
