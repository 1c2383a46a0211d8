"""What the training loop does between steps, as periodic actions with one small interface.

    for action in actions:
      if action.due(step, stopping):
        state = action(step, state)

Each action decides when it is due (its schedule; `stopping` is set when a signal asked the run
to stop) and may return a new train state (the reference reset does). The loop runs them in
order after every step, once the step's metrics are written. Also here: the stop on SIGTERM /
SIGINT that every process of a run agrees on.
"""

from __future__ import annotations

import signal
from typing import Callable

import jax
import numpy as np

from rlp import checkpoint
from rlp import metrics
from rlp import watch


class Action:
  """A periodic action: `due` says whether it runs after this step; `__call__` runs it."""

  def due(self, step: int, stopping: bool) -> bool:
    raise NotImplementedError

  def __call__(self, step: int, state):
    raise NotImplementedError


class HeldoutEval(Action):
  """The held-out eval (evaluate.InRunEval) every train.eval_every steps and at the end of the
  format warm-up, and pass@k every train.eval_reasoning_every steps; the final step's eval runs
  after the final checkpoint (`final`), so a run killed before it can still complete it."""

  def __init__(self, evaluator, every: int, warm: int, total: int, writer: metrics.MetricsWriter):
    self.evaluator, self.every, self.warm, self.total = evaluator, every, warm, total
    self.writer = writer
    # called with (step, metrics, heldout) after each eval: the plateau rule, the step clock
    self.observers: list[Callable[[int, dict, bool], None]] = []

  def _heldout_due(self, step: int) -> bool:
    return bool((self.every and step % self.every == 0) or (self.warm and step == self.warm))

  def due(self, step: int, stopping: bool) -> bool:
    return step < self.total and bool(self.evaluator.docs) and (
        self._heldout_due(step) or self.evaluator.reasoning_due(step, self.total))

  def __call__(self, step: int, state):
    self.run(state.params, step, heldout=self._heldout_due(step))
    return state

  def run(self, params, step: int, heldout: bool = True) -> dict:
    """One eval of params at step, written and shown to the observers."""
    ev = self.evaluator(params, heldout=heldout, reasoning=self.evaluator.reasoning_due(
        step, self.total))
    self.writer.write(step, ev)
    for observe in self.observers:
      observe(step, ev, heldout)
    return ev

  def final(self, params, step: int) -> dict:
    return self.run(params, step)


class Checkpoint(Action):
  """A checkpoint every train.checkpoint_every steps, at the last step and when stopping: the
  train state, the data iterators' state and the metadata (`meta`, and the state of each of
  `parts`: what rides along so a resumed run continues exactly)."""

  def __init__(self, ckpt: checkpoint.Checkpointer, every: int, total: int, iterator,
               meta: dict, parts: dict):
    self.ckpt, self.every, self.total, self.iterator = ckpt, every, total, iterator
    self.meta, self.parts = meta, parts

  def due(self, step: int, stopping: bool) -> bool:
    return step % self.every == 0 or step == self.total or stopping

  def __call__(self, step: int, state):
    extra = {name: part.state() for name, part in self.parts.items() if part is not None}
    self.ckpt.save(step, state, self.iterator.get_state(), {**self.meta, "step": step, **extra})
    return state


class ReferenceReset(Action):
  """ProRL's reference reset (watch.RefReset says when): ref <- params and a fresh optimizer
  state, applied after a step's checkpoint and before the next step, so a run resumed from that
  checkpoint repeats it exactly (`resume`)."""

  def __init__(self, schedule: watch.RefReset, reset: Callable, total: int,
               writer: metrics.MetricsWriter, say: Callable[[str], None]):
    self.schedule, self.reset, self.total, self.writer, self.say = schedule, reset, total, writer, say
    self._why = None

  def state(self) -> dict:
    return self.schedule.state()

  def observe(self, step: int, ev: dict, heldout: bool) -> None:
    """A held-out eval of the main phase feeds the plateau rule."""
    if heldout and step > self.schedule.warm:
      self.schedule.observe_eval(ev)

  def due(self, step: int, stopping: bool) -> bool:
    self._why = None if stopping or step >= self.total else self.schedule.due(step)
    return self._why is not None

  def __call__(self, step: int, state):
    state = self.reset(state)
    self.writer.write(step, {"event/ref_reset": 1.0})
    self.say(f"rlp: reference reset after step {step} ({self._why}): ref <- params, fresh "
             "optimizer state")
    return state

  def resume(self, start: int, state, workdir: str):
    """A run resumed from the checkpoint written just before a reset applies it as the first run
    did (its event row written once)."""
    if start >= self.total or not self.schedule.due(start):
      return state
    state = self.reset(state)
    if not any(r.get("step") == start and "event/ref_reset" in r
               for r in metrics.read_metrics(workdir)):
      self.writer.write(start, {"event/ref_reset": 1.0})
    return state


# ------------------------------------------------------------------ stopping on a signal
class StopFlag:
  """SIGTERM/SIGINT ask the loop to checkpoint and exit at the next step boundary; a second
  signal gives up at once."""

  def __init__(self):
    self.signal = None
    self._old = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._old[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread (e.g. a notebook worker): no handler
        pass
    return self

  def _handle(self, sig, frame):
    if self.signal is not None:
      raise KeyboardInterrupt
    self.signal = sig

  def __exit__(self, *exc):
    for sig, old in self._old.items():
      signal.signal(sig, old)


def agreed_stop(local_signal):
  """The stop decision of all processes: a signal any process received (its number), or None.
  Every process then checkpoints the same step and exits together; deciding alone would leave
  the others waiting in the next collective (the checkpoint save is one) forever."""
  if jax.process_count() == 1:
    return local_signal
  from jax.experimental import multihost_utils  # multi-process runs only
  got = multihost_utils.process_allgather(np.int32(local_signal or 0))
  return int(np.max(got)) or None


def process0_says(flag: bool) -> bool:
  """Process 0's value of a decision taken from the workdir's files, for every process: the
  files are shared and process 0 may be rewriting one (metrics.jsonl on resume) while another
  process reads it, and a decision that leads into collectives must be the same everywhere."""
  if jax.process_count() == 1:
    return flag
  from jax.experimental import multihost_utils  # multi-process runs only
  return bool(multihost_utils.broadcast_one_to_all(np.int32(flag)))
