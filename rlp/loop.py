"""The training loop around the pure steps: it builds a run (mesh, model, data, state) and drives
its steps; what happens between steps (held-out evals, checkpoints, reference resets) is a list of
periodic actions (rlp/actions.py), and a step's metrics are written by rlp/steplog.py.

    from rlp import loop; loop.train(config, workdir)

Step n+1 is dispatched before step n's metrics are read, so the host never waits on the device
except to log. Checkpoints (state + data-iterator state + metadata) are written every
`train.checkpoint_every` steps, at the end, and on SIGTERM / SIGINT; re-running the same command
resumes from the newest readable checkpoint.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
from typing import Any, Callable

import jax
from flax import nnx

from rlp import actions
from rlp import checkpoint
from rlp import configuration
from rlp import evaluate as evaluate_lib
from rlp import inputs
from rlp import metrics
from rlp import plot
from rlp import schema
from rlp import sharding
from rlp import steplog
from rlp import trainer
from rlp import watch
from rlp import workdir as workdir_lib

TrainingError = steplog.TrainingError


def train(config, workdir: str, log=None) -> dict:
  """Runs (or resumes) a training run in `workdir`; returns the last logged metrics. `config` is
  the run's ConfigDict (validated into the typed schema.Run the run works with; the ConfigDict
  itself is what config.json keeps)."""
  log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
  settings = configuration.validate(config, jax.device_count())
  _check_workdir(workdir)
  workdir_lib.refuse_structural_changes(config, workdir)
  os.makedirs(workdir, exist_ok=True)
  _environment_warnings(settings, log)
  mesh = sharding.make_mesh((settings.mesh.data, settings.mesh.fsdp, settings.mesh.tensor))
  if sharding.open_collectives(mesh):
    log(f"rlp: collectives connected ({jax.process_count()} processes, mesh "
        f"{dict(mesh.shape)})")
  model, tok = configuration.load_run_model(settings)
  iterator, data_stats = inputs.Iterators.open(settings, tok, model.config.vocab_size)
  tx = configuration.optimizer(settings)
  step_cfg = configuration.step_config(settings, tok)
  graphdef, model_cfg = nnx.graphdef(model), model.config
  with jax.set_mesh(mesh):
    state = trainer.init_state(model, tx, settings.seed, settings.rlp.kl_beta)
    shardings = sharding.state_shardings(state, tx, mesh, sharding.logical_axes(model))
    state = jax.device_put(state, shardings)
    del model
    if settings.model.init == "checkpoint":
      state = _restore_init_checkpoint(settings, state, shardings, log)
    docs = evaluate_lib.InRunEval.documents(settings, tok)
    at = (workdir_lib.eval_positions(settings, tok, graphdef, state.params, docs, workdir, log)
          if docs and settings.train.eval_positions else None)
    ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"),
                                   settings.train.keep_checkpoints,
                                   async_save=checkpoint.async_pays(mesh))
    writer = _writer(settings, config, workdir)
    restored = _restore(ckpt, state, shardings, iterator, writer, config, workdir, log)
    state, start = (restored.state, restored.step) if restored else (state, 0)
    workdir_lib.write_config(config, workdir, start, log)
    step_fn = _step_fn(settings, graphdef, tx, step_cfg, tok, shardings, mesh)
    peak, peak_src = metrics.device_peak_flops(settings.model.dtype, devices=mesh.devices.flat)
    run = _Run(settings=settings, step_cfg=step_cfg, workdir=workdir, mesh=mesh, ckpt=ckpt,
               writer=writer, tok=tok, model_cfg=model_cfg, log=log, peak=peak,
               evaluator=evaluate_lib.InRunEval(settings, tok, graphdef, docs, at),
               meta={"objective": settings.objective, "tokenizer": tok.fingerprint,
                     "data": data_stats.as_dict()},
               reset_ref=lambda s: jax.device_put(trainer.reset_reference(s, tx), shardings))
    result = _run_steps(run, state, step_fn, iterator, start, restored.meta if restored else {})
    writer.close()
    ckpt.close()
  del iterator
  if (settings.train.plot and jax.process_index() == 0 and result.get("step")
      and not result.get("interrupted")):
    log(f"rlp: curves written to {plot.plot_runs([workdir], os.path.join(workdir, 'curves.png'))}")
  log(f"rlp: peak {peak / 1e9:.1f} GFLOP/s ({peak_src}); host memory peak "
      f"{metrics.host_rss_peak_gib():.1f} GiB; workdir {workdir}")
  return result


def _check_workdir(workdir: str) -> None:
  if "://" in workdir:
    raise configuration.ConfigError(
        f"--workdir={workdir} is a URL; use a local or mounted path (e.g. a gcsfuse mount of the "
        "bucket) shared by all processes")
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise configuration.ConfigError(f"--workdir={workdir} is a file; give a directory (new, or a "
                                    "run's workdir to resume it)")


def _environment_warnings(settings: schema.Run, log) -> None:
  """One line per request the visible devices cannot serve (bf16 or cuDNN attention without an
  accelerator; a mesh larger than the visible devices is refused by config validation)."""
  platform = jax.default_backend()
  if platform == "cpu" and settings.model.dtype != "float32":
    log(f"rlp: warning: model.dtype={settings.model.dtype} but JAX sees only the CPU, where it is "
        "slow and imprecise; install JAX for your accelerator (README: Accelerators)")
  if platform != "gpu" and settings.model.attention == "cudnn":
    log(f"rlp: warning: model.attention=cudnn needs an NVIDIA GPU; JAX sees {platform}, so XLA "
        "attention is used")


def _restore_init_checkpoint(settings: schema.Run, state, shardings, log):
  """model.init=checkpoint: start from the params of a previous run's newest checkpoint."""
  got = checkpoint.restore_run(settings.model.path, checkpoint.abstract_like(state, shardings), log)
  if got is None:
    raise TrainingError(f"model.path={settings.model.path} has no readable checkpoint")
  log(f"rlp: initialised from {settings.model.path} step {got.step}")
  return trainer.restart(state, params=got.state.params, ema=True, ref=True)


def _writer(settings: schema.Run, config, workdir: str) -> metrics.MetricsWriter:
  t = settings.train
  wandb = (dict(project=t.wandb_project, entity=t.wandb_entity,
                name=os.path.basename(os.path.abspath(workdir)), config=config.to_dict())
           if t.wandb_project else None)
  return metrics.MetricsWriter(workdir, t.tensorboard, wandb=wandb)


def _restore(ckpt, state, shardings, iterator, writer, config, workdir, log):
  """The newest readable checkpoint (its data-iterator state set, later metric lines moved
  aside), None for a new run; a checkpoint this config cannot read names what changed."""
  try:
    restored = ckpt.restore_latest(checkpoint.abstract_like(state, shardings), log=log)
  except checkpoint.CheckpointError as e:
    ckpt.close()
    changed = workdir_lib.config_changes(config, workdir)
    raise checkpoint.CheckpointError(
        f"{workdir} holds a run this config cannot resume"
        + (f" (changed since it: {'; '.join(changed)})" if changed else "") + f": {e}") from None
  if restored is not None:
    if restored.data_state is not None:
      iterator.set_state(restored.data_state)
    moved = writer.rewind(restored.step)
    log(f"rlp: resumed from {ckpt.directory} step {restored.step}"
        + (f" ({moved} later metric lines moved to metrics.rewound.jsonl)" if moved else ""))
  return restored


def _step_fn(settings: schema.Run, graphdef, tx, step_cfg, tok, shardings, mesh) -> "_Phases":
  """The run's jitted step, after the format warm-up's when there is one."""
  tok_bytes = tok.token_bytes() if settings.objective == "rpt" else None
  placed = sharding.step_shardings(shardings, mesh)  # stated, not left to the partitioner
  main_fn = trainer.make_step(graphdef, tx, step_cfg, tokenizer_bytes=tok_bytes, **placed)
  if not settings.warmup.steps:
    return _Phases(None, main_fn, 0, None)
  wtx = configuration.warmup_optimizer(settings)
  warm_fn = trainer.make_step(graphdef, wtx, dataclasses.replace(step_cfg, objective="cpt"),
                              **placed)

  def reset(state):  # warm-up -> main phase: EMA restarts at theta, fresh optimizer state
    return jax.device_put(trainer.restart(state, tx=tx, ema=True), shardings)
  return _Phases(warm_fn, main_fn, settings.warmup.steps, reset)


class _Phases:
  """The format warm-up's step for the first `warmup_steps` steps, then the run's step; the
  switch (EMA <- theta, fresh optimizer state) is applied when step warmup_steps + 1 starts, so a
  run resumed from the warm-up's last checkpoint switches exactly as an uninterrupted one."""

  def __init__(self, warm_fn, main_fn, warmup_steps, reset):
    self.warm_fn, self.main_fn, self.warmup_steps, self.reset = warm_fn, main_fn, warmup_steps, reset

  def __call__(self, state, batch, step):
    if step < self.warmup_steps:
      return self.warm_fn(state, batch)
    if step == self.warmup_steps and self.reset is not None:
      state = self.reset(state)
    return self.main_fn(state, batch)


@dataclasses.dataclass
class _Run:
  """What the step loop works with, built once by `train`."""
  settings: schema.Run
  step_cfg: trainer.StepConfig
  workdir: str
  mesh: jax.sharding.Mesh
  ckpt: checkpoint.Checkpointer
  writer: metrics.MetricsWriter
  tok: Any  # models.tokenizer.Tokenizer
  model_cfg: Any  # models.ModelConfig
  log: Callable[[str], None]
  peak: float  # the MFU denominator, FLOP/s
  evaluator: evaluate_lib.InRunEval
  meta: dict  # what every checkpoint's metadata holds
  reset_ref: Callable  # state -> state after ProRL's reference reset

  @property
  def warm(self) -> int:
    return self.settings.warmup.steps

  @property
  def total(self) -> int:
    return self.settings.train.steps + self.settings.warmup.steps


def _finish_owed(run: _Run, evals: actions.HeldoutEval, start: int, state) -> dict:
  """A rerun of a finished run: writes what a run killed after its last checkpoint still owed
  (the final held-out eval, then the curves, via the returned step), else only says it is done."""
  total = run.total
  rows = metrics.read_metrics(run.workdir)
  has_eval = any(r.get("step") == total and "eval/nll" in r for r in rows)
  owed_eval = actions.process0_says(bool(run.evaluator.docs) and not has_eval)
  owed_plot = run.settings.train.plot and not os.path.exists(os.path.join(run.workdir,
                                                                          "curves.png"))
  if not (owed_eval or owed_plot):
    run.log(f"rlp: the run is already complete at step {start} of {total} (warmup.steps + "
            "train.steps); raise --config.train.steps to continue it")
    return {}
  last = {"step": start}
  if owed_eval:
    run.log(f"rlp: the run reached step {start} but its final eval was not written; writing it")
    last.update(evals.final(state.params, start))
  return last


def _run_steps(run: _Run, state, step_fn, iterator, start: int, saved: dict) -> dict:
  """Steps from `start` to the run's total, each followed by the periodic actions that are due;
  the stop on a signal all processes agree on; the final eval after the final checkpoint."""
  t, warm, total = run.settings.train, run.warm, run.total
  evals = actions.HeldoutEval(run.evaluator, t.eval_every, warm, total, run.writer)
  if start >= total:
    return _finish_owed(run, evals, start, state)
  steps = steplog.StepLog(run.settings, run.step_cfg, run.model_cfg, run.tok, run.writer, run.log,
                          start, run.peak, saved.get("collapse_watch"))
  resets = actions.ReferenceReset(
      watch.RefReset(run.settings.rlp.ref_reset_every, run.settings.rlp.ref_reset_on_plateau,
                     warm, saved.get("ref_reset")), run.reset_ref, total, run.writer, steps.say)
  evals.observers += [resets.observe, lambda *_: steps.restart_clock()]
  if start == 0 and (t.eval_every or t.eval_reasoning_every) and run.evaluator.docs:
    evals.run(state.params, 0, heldout=bool(t.eval_every))  # the curves' starting point
  state = resets.resume(start, state, run.workdir)
  schedule = (evals, actions.Checkpoint(run.ckpt, t.checkpoint_every, total, iterator, run.meta,
                                        {"collapse_watch": steps.watch, "ref_reset": resets}),
              resets)
  stopping, step = None, start
  with actions.StopFlag() as stop:
    while step < total:
      batch = iterator.next(step, warm)
      state, m, ro = step_fn(state, sharding.shard_batch(batch, run.mesh), step)
      step += 1
      steps.record(step, m, ro, batch)  # writes the previous step's, read while this one runs
      stopping = actions.agreed_stop(stop.signal)
      for action in schedule:
        if action.due(step, stopping is not None):
          steps.flush()  # a step's metrics are written before its eval or checkpoint
          state = action(step, state)
      if stopping is not None:
        break
    steps.flush()
  steps.close()
  run.ckpt.wait()  # the final checkpoint is on disk before the final eval (a rerun completes it)
  if stopping is not None:
    who = "" if stop.signal else " by another process"
    run.log(f"rlp: {signal.Signals(stopping).name} received{who}; checkpoint at step {step} "
            "written; rerun the same command to resume")
    return {**steps.last, "interrupted": int(stopping)}
  last = steps.last
  if run.evaluator.docs and step == total:
    last.update(evals.final(state.params, step))
  return last
