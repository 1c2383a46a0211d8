"""Watches over a run's main phase: policy collapse (entropy, thought length) and the ProRL
reference reset's schedule; their state rides in the checkpoint metadata."""

from __future__ import annotations

import numpy as np


class CollapseWatch:
  """Policy entropy and thought length against their first values of the run's main phase:
  `watch/<name>_ratio` every step, and one warning line when a ratio first falls below `frac`
  (entropy collapse and thoughts shrinking to nothing precede a stalled RL run). The starting
  values ride in the checkpoint metadata, so a resumed run reports the same ratios."""

  KEYS = {"entropy": "rlp/entropy", "thought_len": "rlp/thought_len_mean"}

  def __init__(self, frac: float, log, saved: dict | None = None):
    self.frac, self.log = frac, log
    saved = saved or {}
    self.start, self.warned = dict(saved.get("start", {})), set(saved.get("warned", []))

  def state(self) -> dict:
    return {"start": {k: float(v) for k, v in self.start.items()}, "warned": sorted(self.warned)}

  def __call__(self, step: int, host: dict) -> None:
    if self.frac <= 0:
      return
    for name, key in self.KEYS.items():
      v = host.get(key)
      if v is None or not np.isfinite(v):
        continue
      start = self.start.setdefault(name, v)
      if start <= 0:
        continue
      ratio = v / start
      host[f"watch/{name}_ratio"] = ratio
      if ratio < self.frac and name not in self.warned:
        self.warned.add(name)
        self.log(f"rlp: warning: {key} fell to {ratio:.2f} of its starting value ({v:.3g} vs "
                 f"{start:.3g}) at step {step}; a collapsing policy stops exploring (lower "
                 "optim.lr, raise rlp.temperature, or add rlp.kl_beta)")


class RefReset:
  """When to reset the reference (trainer.reset_reference): every `every` steps of the run's main
  phase, and after `patience` held-out evals without a new best eval/information_gain. Its state
  (best, evals since best) is saved in the checkpoint metadata, so a resumed run resets at the
  same steps as an uninterrupted one."""

  def __init__(self, every: int, patience: int, warm: int, saved: dict | None = None):
    self.every, self.patience, self.warm = every, patience, warm
    saved = saved or {}
    self.best = saved.get("best")
    self.since = saved.get("since", 0)
    self.pending = saved.get("pending", False)

  def state(self) -> dict:
    return {"best": None if self.best is None else float(self.best), "since": int(self.since),
            "pending": bool(self.pending)}

  def observe_eval(self, ev: dict) -> None:
    gain = ev.get("eval/information_gain")
    if not self.patience or gain is None or not np.isfinite(gain):
      return
    if self.best is None or gain > self.best:
      self.best, self.since = gain, 0
    else:
      self.since += 1
      if self.since >= self.patience:
        self.pending, self.since, self.best = True, 0, None

  def due(self, step: int) -> str | None:
    """The reason to reset after `step` (before the next step runs), or None."""
    if step <= self.warm:
      return None
    if self.pending:
      self.pending = False
      return "plateau"
    if self.every and (step - self.warm) % self.every == 0:
      return "every"
    return None
