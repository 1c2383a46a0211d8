"""A training step's metrics on the host: timing, tokens/s and MFU, the collapse watch, the progress
bar, sampled thoughts and the non-finite-update guard.

`record` holds a step's device metrics; `flush` reads them (blocking) and writes them, so a step's
metrics are read while the next step runs and the host never waits on the device except to log.
"""

from __future__ import annotations

import sys
import time
from typing import Callable

import jax
import numpy as np

from rlp import batches
from rlp import metrics
from rlp import schema
from rlp import trainer
from rlp import watch


class TrainingError(RuntimeError):
  """The run cannot go on (non-finite updates, a missing start checkpoint); exit code 3."""


def local(x):
  """This process's first shard of a global array (rows of its own host batch come first)."""
  return np.asarray(x) if x.is_fully_addressable else np.asarray(x.addressable_shards[0].data)


def sample_text(tok, batch, ro, b=0, k=0, n=2) -> str:
  """Document b's k-th target position as text: the 24 tokens before it, n thoughts, x_t. The
  position is the rollout's own (with entropy / low_logp selection the step chooses it; the
  batch's cuts are then unused)."""
  lines = []
  t = int(local(ro.cuts)[b, k])
  ctx = tok.decode(np.asarray(batches.DocBatch.of(batch).tokens)[b, max(0, t - 24):t])
  target = tok.decode([int(local(ro.targets)[b, k])])
  toks, valid, s_pred = local(ro.tokens), local(ro.valid), local(ro.s_pred)
  for g in range(min(n, toks.shape[2])):
    thought = tok.decode(toks[b, k, g][valid[b, k, g] > 0])
    lines.append(f"...{ctx!r} <think>{thought!r} -> {target!r} "
                 f"(S_pred {float(s_pred[b, k, g]):.3f})")
  return "\n".join(lines)


class StepLog:
  """Writes each step's metrics one step late (see the module docstring)."""

  def __init__(self, settings: schema.Run, step_cfg: trainer.StepConfig, model_cfg, tok,
               writer: metrics.MetricsWriter, log: Callable[[str], None], start: int, peak: float,
               watch_state: dict | None = None):
    t_cfg = settings.train
    self.settings, self.model_cfg, self.tok, self.writer = settings, model_cfg, tok, writer
    self.start, self.peak = start, peak
    self.warm, self.total = settings.warmup.steps, settings.warmup.steps + t_cfg.steps
    self.progress = None
    if t_cfg.progress and jax.process_index() == 0:
      from tqdm import tqdm  # only process 0 draws a bar
      self.progress = tqdm(total=self.total, initial=start, desc=settings.objective, unit="step",
                           dynamic_ncols=True, file=sys.stdout)
    self.say = self.progress.write if self.progress is not None else log
    self.watch = watch.CollapseWatch(t_cfg.collapse_frac, self.say, watch_state)
    # constants of the FLOPs estimate
    self.prompt_len = len(step_cfg.sampler.prompt_ids)
    self.ema_forward = step_cfg.needs_ema_forward
    self.pending = None
    self.skips = 0
    self.last: dict = {}
    self.restart_clock()

  def restart_clock(self) -> None:
    """After an eval: its time is not the next step's."""
    self.t_last = time.perf_counter()

  def record(self, step, m, ro, batch) -> None:
    self.flush()
    self.pending = (step, m, ro, batch)

  def flush(self) -> None:
    if self.pending is not None:
      jax.block_until_ready(self.pending[1])
      now = time.perf_counter()
      self._emit(*self.pending, now - self.t_last)
      self.t_last, self.pending = now, None

  def close(self) -> None:
    if self.progress is not None:
      self.progress.close()

  def _flops_and_tokens(self, step, host):
    s, d = self.settings, self.settings.data
    if s.objective == "cpt" or step <= self.warm:
      return (metrics.cpt_step_flops(self.model_cfg, d.batch_size, d.seq_len),
              host.get("tokens", 0))
    flops = metrics.rlp_step_flops(
        self.model_cfg, batch=d.batch_size, seq_len=d.seq_len, positions=d.positions_per_doc,
        group=s.rlp.group_size, prompt_len=self.prompt_len,
        thought_len=host.get("rlp/thought_len_mean", 0) + 1, updates=s.rlp.num_updates,
        ema_forward=self.ema_forward)
    return flops, host.get("tokens", 0) + host.get("thought_tokens", 0)

  def _emit(self, step, m, ro, batch, dt):
    t_cfg = self.settings.train
    host = metrics.to_host(m)
    self.skips = self.skips + 1 if host.get("skipped", 0) > 0 else 0
    if step <= self.warm:  # the format warm-up's next-token steps, named apart from the run's
      host["warmup/nll"] = host.pop("cpt/nll")
    flops, tokens = self._flops_and_tokens(step, host)
    if step == self.start + 1:
      host["perf/includes_compile"] = 1.0  # the first step of a process also compiles
    if step > self.warm:
      self.watch(step, host)
    host["perf/step_seconds"] = dt
    host["perf/tokens_per_sec"] = tokens / max(dt, 1e-9)
    host["perf/mfu"] = flops / max(dt, 1e-9) / self.peak
    host["perf/peak_flops"] = self.peak  # the denominator (its source is in the run log)
    host["perf/host_rss_peak_gib"] = metrics.host_rss_peak_gib()
    if step % t_cfg.log_every == 0 or step == self.total:
      self.writer.write(step, host)
    if (ro is not None and t_cfg.sample_every and jax.process_index() == 0
        and (step % t_cfg.sample_every == 0 or step == 1)):
      text = sample_text(self.tok, batch, ro)
      self.writer.text(step, "samples/thoughts", text)
      self.say(f"[step {step}] sample thoughts:\n{text}")
    self._progress(step, host, dt)
    self.last = {"step": step, **host}
    if self.skips >= t_cfg.max_consecutive_skips:
      raise TrainingError(f"{self.skips} consecutive updates had a non-finite loss or gradient "
                          f"(last at step {step}); lower optim.lr or check the data")

  def _progress(self, step, host, dt):
    if self.progress is None:
      return
    post = {"s/step": f"{dt:.2f}" + (" (compiling)" if step == self.start + 1 else ""),
            "tok/s": f"{host['perf/tokens_per_sec']:.0f}",
            "loss": f"{host.get('loss', 0):.4f}"}
    if "rlp/reward_mean" in host:
      post["reward"] = f"{host['rlp/reward_mean']:.3f}"
    self.progress.set_postfix(post, refresh=False)
    self.progress.update(step - self.progress.n)
