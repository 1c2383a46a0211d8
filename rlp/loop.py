"""The training loop around the pure steps: mesh, data, model, checkpoints, metrics, eval, plots.

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
import time
from typing import Any, Callable

import jax
import numpy as np
from flax import nnx

from rlp import checkpoint
from rlp import configuration
from rlp import data
from rlp import evaluate as evaluate_lib
from rlp import metrics
from rlp import schema
from rlp import sharding
from rlp import thought_eval
from rlp import trainer
from rlp import watch
from rlp import workdir as workdir_lib
from rlp.thought_format import thought_format


class TrainingError(RuntimeError):
  pass


class _StopFlag:
  """SIGTERM/SIGINT ask the loop to checkpoint and exit at the next step boundary."""

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
    if self.signal is not None:  # second signal: give up immediately
      raise KeyboardInterrupt
    self.signal = sig

  def __exit__(self, *exc):
    for sig, old in self._old.items():
      signal.signal(sig, old)


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


def _build_data(settings: schema.Run, tok, model_vocab, warmup: bool = False):
  """The run's pipeline (RLP/RPT: documents and positions; CPT: packed sequences), or with
  warmup=True the format warm-up's packed sequences of warmup.source."""
  d = settings.data
  data.check_vocab(tok, model_vocab)
  source = settings.warmup.source if warmup else d.source
  docs, stats = data.open_documents(source, tok, min_tokens=d.min_prefix + 1, num_docs=d.num_docs,
                                    thought_format=thought_format(tok, settings.rlp.template),
                                    seed=settings.seed)
  if stats.max_token_id is not None:  # a stored dataset's ids must fit the model's embedding
    data.check_vocab(tok, model_vocab, {"max_token_id": stats.max_token_id})
  per_process = d.batch_size // jax.process_count()
  common = dict(seq_len=d.seq_len, batch_size=per_process, seed=settings.seed,
                process_index=jax.process_index(), process_count=jax.process_count())
  if settings.objective == "cpt" or warmup:
    ds = data.cpt_dataset(docs, **common)
  else:
    pad = tok.eos_id if tok.eos_id is not None else 0
    ds = data.rlp_dataset(docs, positions_per_doc=d.positions_per_doc, min_prefix=d.min_prefix,
                          pad_id=pad, marker_ids=configuration.marker_ids(settings, tok), **common)
  return ds, stats


class _Iterators:
  """The main data iterator and, with a format warm-up, the warm-up's; one checkpointable state."""

  def __init__(self, main, warmup=None):
    self.main, self.warmup = main, warmup

  def next(self, step: int, warmup_steps: int):
    return next(self.warmup if step < warmup_steps else self.main)

  def get_state(self):
    if self.warmup is None:
      return self.main.get_state()
    return {"main": self.main.get_state(), "warmup": self.warmup.get_state()}

  def set_state(self, state):
    with_warmup = isinstance(state, dict) and set(state) == {"main", "warmup"}
    if (self.warmup is not None) != with_warmup:
      raise checkpoint.CheckpointError(
          "the checkpoint's data-iterator state was written by a run "
          f"{'with' if with_warmup else 'without'} a format warm-up and this run "
          f"{'has' if self.warmup is not None else 'has none'}; resume with the run's "
          "warmup.steps or use a new --workdir")
    if self.warmup is None:
      self.main.set_state(state)
    else:
      self.main.set_state(state["main"])
      self.warmup.set_state(state["warmup"])


def _eval_docs(settings: schema.Run, tok):
  if not settings.train.eval_docs or not settings.data.eval_source:
    return []
  ds, _ = data.open_documents(settings.data.eval_source, tok, min_tokens=2,
                              num_docs=settings.train.eval_docs)
  return [ds[i] for i in range(min(len(ds), settings.train.eval_docs))]


def _sampler_exclude(settings: schema.Run, tok):
  return thought_format(tok, settings.rlp.template).open_token


def _thought_eval(settings: schema.Run, tok, graphdef, params, eval_docs, at, group=None, ks=(),
                  seed=0):
  """Held-out thought eval with the run's own sampler and format at the run's fixed positions."""
  cfg = configuration.sampler_config(settings, tok)
  if group:
    cfg = dataclasses.replace(cfg, group_size=group)
  return thought_eval.thought_likelihood(
      nnx.merge(graphdef, params), eval_docs, cfg, settings.data.seq_len, at,
      seed=settings.seed + seed, batch_size=max(1, min(len(eval_docs), 8)),
      baseline_exclude=_sampler_exclude(settings, tok),
      placebos=tuple(settings.train.eval_placebos), ks=ks)


def _reasoning_eval(settings: schema.Run, tok, graphdef, params, eval_docs, at):
  """pass@1 / pass@k over training: the thought eval's held-out positions as problems, each
  solved by train.eval_reasoning_samples thoughts of the run's sampler (thought_eval.py)."""
  t = settings.train
  ev = _thought_eval(settings, tok, graphdef, params, eval_docs, at, t.eval_reasoning_samples,
                     tuple(t.eval_reasoning_ks), seed=1)
  return {k: v for k, v in ev.items() if k.startswith(("reasoning/", "diversity/"))}


def _reasoning_due(settings: schema.Run, step: int, total: int) -> bool:
  every = settings.train.eval_reasoning_every
  return bool(every) and (step % every == 0 or step == total)


def _evaluate(settings: schema.Run, tok, graphdef, params, eval_docs, at, heldout: bool = True,
              reasoning: bool = False) -> dict:
  ev = {}
  if heldout:
    ev.update(evaluate_lib.heldout_nll(graphdef, params, eval_docs, settings.data.seq_len))
    if at is not None and settings.objective != "rpt":
      ev.update(_thought_eval(settings, tok, graphdef, params, eval_docs, at))
  if reasoning:
    ev.update(_reasoning_eval(settings, tok, graphdef, params, eval_docs, at))
  return ev


def _restore_init_checkpoint(settings: schema.Run, state, shardings, log):
  """model.init=checkpoint: start from the params of a previous run's newest checkpoint."""
  got = checkpoint.restore_run(settings.model.path, checkpoint.abstract_like(state, shardings), log)
  if got is None:
    raise TrainingError(f"model.path={settings.model.path} has no readable checkpoint")
  params = got.state.params
  log(f"rlp: initialised from {settings.model.path} step {got.step}")
  return trainer.restart(state, params=params, ema=True, ref=True)


def _agreed_stop(local_signal):
  """The stop decision of all processes: a signal any process received (its number), or None.
  Every process then checkpoints the same step and exits together; deciding alone would leave
  the others waiting in the next collective (the checkpoint save is one) forever."""
  if jax.process_count() == 1:
    return local_signal
  from jax.experimental import multihost_utils
  got = multihost_utils.process_allgather(np.int32(local_signal or 0))
  return int(np.max(got)) or None


def _process0_says(flag: bool) -> bool:
  """Process 0's value of a decision taken from the workdir's files, for every process: the
  files are shared and process 0 may be rewriting one (metrics.jsonl on resume) while another
  process reads it, and a decision that leads into collectives must be the same everywhere."""
  if jax.process_count() == 1:
    return flag
  from jax.experimental import multihost_utils
  return bool(multihost_utils.broadcast_one_to_all(np.int32(flag)))


def _local(x):
  """This process's first shard of a global array (rows of its own host batch come first)."""
  return np.asarray(x) if x.is_fully_addressable else np.asarray(x.addressable_shards[0].data)


def _sample_text(tok, batch, ro, b=0, k=0, n=2):
  """Document b's k-th target position as text: the 24 tokens before it, n thoughts, x_t. The
  position is the rollout's own (with entropy / low_logp selection the step chooses it; the
  batch's cuts are then unused)."""
  lines = []
  t = int(_local(ro.cuts)[b, k])
  ctx = tok.decode(np.asarray(batch["tokens"])[b, max(0, t - 24):t])
  target = tok.decode([int(_local(ro.targets)[b, k])])
  toks, valid, s_pred = _local(ro.tokens), _local(ro.valid), _local(ro.s_pred)
  for g in range(min(n, toks.shape[2])):
    thought = tok.decode(toks[b, k, g][valid[b, k, g] > 0])
    lines.append(f"...{ctx!r} <think>{thought!r} -> {target!r} "
                 f"(S_pred {float(s_pred[b, k, g]):.3f})")
  return "\n".join(lines)


def train(config, workdir: str, log=None) -> dict:
  """Runs (or resumes) a training run in `workdir`; returns the last logged metrics."""
  log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
  settings = configuration.validate(config, jax.device_count())  # the typed run (rlp/schema.py)
  if "://" in workdir:
    raise configuration.ConfigError(f"--workdir={workdir} is a URL; use a local or mounted path (e.g. a "
                                    "gcsfuse mount of the bucket) shared by all processes")
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise configuration.ConfigError(f"--workdir={workdir} is a file; give a directory (new, or a run's "
                                    "workdir to resume it)")
  workdir_lib.refuse_structural_changes(config, workdir)
  os.makedirs(workdir, exist_ok=True)
  _environment_warnings(settings, log)
  mesh = sharding.make_mesh((settings.mesh.data, settings.mesh.fsdp, settings.mesh.tensor))
  if sharding.open_collectives(mesh):
    log(f"rlp: collectives connected ({jax.process_count()} processes, mesh "
        f"{dict(mesh.shape)})")
  if settings.model.init == "checkpoint":
    model, tok = configuration.load_model_and_tokenizer(
        configuration.load_run_config(settings.model.path))
  else:
    model, tok = configuration.load_model_and_tokenizer(settings)
  ds, data_stats = _build_data(settings, tok, model.config.vocab_size)
  iterator = _Iterators(data.make_iterator(ds, settings.data.workers))
  if settings.warmup.steps:
    wds, _ = _build_data(settings, tok, model.config.vocab_size, warmup=True)
    iterator.warmup = data.make_iterator(wds, settings.data.workers)
  tx = configuration.optimizer(settings)
  step_cfg = configuration.step_config(settings, tok)
  graphdef = nnx.graphdef(model)
  model_cfg = model.config
  with jax.set_mesh(mesh):
    state = trainer.init_state(model, tx, settings.seed, settings.rlp.kl_beta)
    shardings = sharding.state_shardings(state, tx, mesh, sharding.logical_axes(model))
    state = jax.device_put(state, shardings)
    del model
    if settings.model.init == "checkpoint":
      state = _restore_init_checkpoint(settings, state, shardings, log)
    eval_docs = _eval_docs(settings, tok)
    eval_at = (workdir_lib.eval_positions(settings, tok, graphdef, state.params, eval_docs, workdir, log)
               if eval_docs and settings.train.eval_positions else None)
    ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"),
                                   settings.train.keep_checkpoints,
                                   async_save=checkpoint.async_pays(mesh))
    wandb = (dict(project=settings.train.wandb_project, entity=settings.train.wandb_entity,
                  name=os.path.basename(os.path.abspath(workdir)), config=config.to_dict())
             if settings.train.wandb_project else None)
    writer = metrics.MetricsWriter(workdir, settings.train.tensorboard, wandb=wandb)
    start = 0
    try:
      restored = ckpt.restore_latest(checkpoint.abstract_like(state, shardings), log=log)
    except checkpoint.CheckpointError as e:
      ckpt.close()
      changed = workdir_lib.config_changes(config, workdir)
      raise checkpoint.CheckpointError(
          f"{workdir} holds a run this config cannot resume"
          + (f" (changed since it: {'; '.join(changed)})" if changed else "") + f": {e}") from None
    if restored is not None:
      state, data_state, _, start = restored
      if data_state is not None:
        iterator.set_state(data_state)
      moved = writer.rewind(start)
      log(f"rlp: resumed from {ckpt.directory} step {start}"
          + (f" ({moved} later metric lines moved to metrics.rewound.jsonl)" if moved else ""))
    workdir_lib.write_config(config, workdir, start, log)
    tok_bytes = tok.token_bytes() if settings.objective == "rpt" else None
    placed = sharding.step_shardings(shardings, mesh)  # stated, not left to the partitioner
    step_fn = trainer.make_step(graphdef, tx, step_cfg, tokenizer_bytes=tok_bytes, **placed)
    if settings.warmup.steps:
      wtx = configuration.warmup_optimizer(settings)
      warm_fn = trainer.make_step(graphdef, wtx, dataclasses.replace(step_cfg, objective="cpt"),
                                  **placed)

      def reset(state):  # warm-up -> main phase: EMA restarts at theta, fresh optimizer state
        return jax.device_put(trainer.restart(state, tx=tx, ema=True), shardings)

      step_fn = _Phases(warm_fn, step_fn, settings.warmup.steps, reset)
    meta = {"objective": settings.objective, "tokenizer": tok.fingerprint,
            "data": data_stats.as_dict()}
    saved = restored.meta if restored else {}
    resets = watch.RefReset(settings.rlp.ref_reset_every, settings.rlp.ref_reset_on_plateau,
                      settings.warmup.steps, saved.get("ref_reset"))

    def reset_ref(state):
      return jax.device_put(trainer.reset_reference(state, tx), shardings)
    peak, peak_src = metrics.device_peak_flops(settings.model.dtype, devices=mesh.devices.flat)
    run = _Run(settings=settings, step_cfg=step_cfg, workdir=workdir, mesh=mesh, ckpt=ckpt, writer=writer, tok=tok,
               graphdef=graphdef, model_cfg=model_cfg, meta=meta, eval_docs=eval_docs,
               eval_at=eval_at, log=log,
               resets=resets, reset_ref=reset_ref)
    result = _run_steps(run, state, step_fn, iterator, start, peak, saved.get("collapse_watch"))
    writer.close()
    ckpt.close()
  del iterator
  if (settings.train.plot and jax.process_index() == 0 and result.get("step")
      and not result.get("interrupted")):
    from rlp import plot
    path = plot.plot_runs([workdir], os.path.join(workdir, "curves.png"))
    log(f"rlp: curves written to {path}")
  log(f"rlp: peak {peak / 1e9:.1f} GFLOP/s ({peak_src}); host memory peak "
      f"{metrics.host_rss_peak_gib():.1f} GiB; workdir {workdir}")
  return result


class _Phases:
  """The format warm-up's step for the first `warmup_steps` steps, then the run's step; the
  switch (EMA <- theta, fresh optimizer state) is applied when step warmup_steps + 1 starts, so a
  run resumed from the warm-up's last checkpoint switches exactly as an uninterrupted one."""

  def __init__(self, warm_fn, main_fn, warmup_steps, reset):
    self.warm_fn, self.main_fn, self.warmup_steps, self.reset = warm_fn, main_fn, warmup_steps, reset

  def __call__(self, state, batch, step):
    if step < self.warmup_steps:
      return self.warm_fn(state, batch)
    if step == self.warmup_steps:
      state = self.reset(state)
    return self.main_fn(state, batch)


@dataclasses.dataclass
class _Run:
  """What the step loop works with, built once by `train`."""
  settings: schema.Run
  step_cfg: trainer.StepConfig
  workdir: str
  mesh: Any
  ckpt: Any  # checkpoint.Checkpointer
  writer: Any  # metrics.MetricsWriter
  tok: Any
  graphdef: Any
  model_cfg: Any
  meta: dict
  eval_docs: Any
  eval_at: Any  # thought_eval.EvalPositions: the thought eval's fixed positions (None: off)
  log: Callable[[str], None]
  resets: Any = None  # RefReset
  reset_ref: Callable | None = None

  @property
  def warm(self) -> int:
    return self.settings.warmup.steps

  @property
  def total(self) -> int:
    return self.settings.train.steps + self.settings.warmup.steps

  def evaluate(self, params, step: int, heldout: bool = True) -> dict:
    ev = _evaluate(self.settings, self.tok, self.graphdef, params, self.eval_docs, self.eval_at,
                   heldout=heldout, reasoning=_reasoning_due(self.settings, step, self.total))
    self.writer.write(step, ev)
    return ev


class _StepLog:
  """A step's metrics on the host: time since the previous step (evals excluded), tokens/s and
  MFU, the collapse watch, the progress bar, sampled thoughts and the non-finite-update guard.

  `record` holds a step's device metrics; `flush` reads them (blocking) and writes them, so a
  step's metrics are read while the next step runs."""

  def __init__(self, run: _Run, start: int, peak: float, watch_state=None):
    settings, t_cfg = run.settings, run.settings.train
    self.run, self.start, self.peak = run, start, peak
    self.progress = None
    if t_cfg.progress and jax.process_index() == 0:
      from tqdm import tqdm
      self.progress = tqdm(total=run.total, initial=start, desc=settings.objective, unit="step",
                           dynamic_ncols=True, file=sys.stdout)
    self.say = self.progress.write if self.progress is not None else run.log
    self.watch = watch.CollapseWatch(t_cfg.collapse_frac, self.say, watch_state)
    # constants of the FLOPs estimate
    self.prompt_len = len(run.step_cfg.sampler.prompt_ids)
    self.ema_forward = run.step_cfg.needs_ema_forward
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
    settings, d = self.run.settings, self.run.settings.data
    if settings.objective == "cpt" or step <= self.run.warm:
      return (metrics.cpt_step_flops(self.run.model_cfg, d.batch_size, d.seq_len),
              host.get("tokens", 0))
    flops = metrics.rlp_step_flops(
        self.run.model_cfg, batch=d.batch_size, seq_len=d.seq_len, positions=d.positions_per_doc,
        group=settings.rlp.group_size, prompt_len=self.prompt_len,
        thought_len=host.get("rlp/thought_len_mean", 0) + 1, updates=settings.rlp.num_updates,
        ema_forward=self.ema_forward)
    return flops, host.get("tokens", 0) + host.get("thought_tokens", 0)

  def _emit(self, step, m, ro, batch, dt):
    run, t_cfg = self.run, self.run.settings.train
    host = metrics.to_host(m)
    self.skips = self.skips + 1 if host.get("skipped", 0) > 0 else 0
    if step <= run.warm:  # the format warm-up's next-token steps, named apart from the run's
      host["warmup/nll"] = host.pop("cpt/nll")
    flops, tokens = self._flops_and_tokens(step, host)
    if step == self.start + 1:
      host["perf/includes_compile"] = 1.0  # the first step of a process also compiles
    if step > run.warm:
      self.watch(step, host)
    host["perf/step_seconds"] = dt
    host["perf/tokens_per_sec"] = tokens / max(dt, 1e-9)
    host["perf/mfu"] = flops / max(dt, 1e-9) / self.peak
    host["perf/peak_flops"] = self.peak  # the denominator (its source is in the run log)
    host["perf/host_rss_peak_gib"] = metrics.host_rss_peak_gib()
    if step % t_cfg.log_every == 0 or step == run.total:
      run.writer.write(step, host)
    if (ro is not None and t_cfg.sample_every and jax.process_index() == 0
        and (step % t_cfg.sample_every == 0 or step == 1)):
      text = _sample_text(run.tok, batch, ro)
      run.writer.text(step, "samples/thoughts", text)
      self.say(f"[step {step}] sample thoughts:\n{text}")
    if self.progress is not None:
      post = {"s/step": f"{dt:.2f}" + (" (compiling)" if step == self.start + 1 else ""),
              "tok/s": f"{host['perf/tokens_per_sec']:.0f}",
              "loss": f"{host.get('loss', 0):.4f}"}
      if "rlp/reward_mean" in host:
        post["reward"] = f"{host['rlp/reward_mean']:.3f}"
      self.progress.set_postfix(post, refresh=False)
      self.progress.update(step - self.progress.n)
    self.last = {"step": step, **host}
    if self.skips >= t_cfg.max_consecutive_skips:
      raise TrainingError(f"{self.skips} consecutive updates had a non-finite loss or gradient "
                          f"(last at step {step}); lower optim.lr or check the data")


def _finish_owed(run: _Run, start: int, state) -> dict:
  """A rerun of a finished run: writes what a run killed after its last checkpoint still owed
  (the final held-out eval, then the curves, via the returned step), else only says it is done."""
  total = run.total
  rows = metrics.read_metrics(run.workdir)
  has_eval = any(r.get("step") == total and "eval/nll" in r for r in rows)
  owed_eval = _process0_says(bool(run.eval_docs) and not has_eval)
  owed_plot = run.settings.train.plot and not os.path.exists(os.path.join(run.workdir, "curves.png"))
  if not (owed_eval or owed_plot):
    run.log(f"rlp: the run is already complete at step {start} of {total} (warmup.steps + "
            "train.steps); raise --config.train.steps to continue it")
    return {}
  last = {"step": start}
  if owed_eval:
    run.log(f"rlp: the run reached step {start} but its final eval was not written; writing it")
    last.update(run.evaluate(state.params, start))
  return last


def _run_steps(run: _Run, state, step_fn, iterator, start: int, peak: float,
               watch_state=None) -> dict:
  """Steps from `start` to the run's total: the step, its metrics (read one step late),
  checkpoints, held-out evals, reference resets and the agreed stop on a signal."""
  t_cfg, warm, total, resets = run.settings.train, run.warm, run.total, run.resets
  if not isinstance(step_fn, _Phases):
    main_fn = step_fn
    step_fn = lambda state, batch, step: main_fn(state, batch)  # noqa: E731
  if start >= total:
    return _finish_owed(run, start, state)
  steps = _StepLog(run, start, peak, watch_state)

  def evaluate(step, heldout=True):
    if run.eval_docs:
      ev = run.evaluate(state.params, step, heldout)
      if resets is not None and step > warm and heldout:
        resets.observe_eval(ev)
      steps.restart_clock()

  if start == 0 and (t_cfg.eval_every or t_cfg.eval_reasoning_every):
    evaluate(0, heldout=bool(t_cfg.eval_every))  # the starting point of the held-out curves
  stopping = None
  if resets is not None and start < total and resets.due(start):
    # resumed from the checkpoint written just before a reset: apply it as the first run did
    state = run.reset_ref(state)
    if not any(r.get("step") == start and "event/ref_reset" in r
               for r in metrics.read_metrics(run.workdir)):
      run.writer.write(start, {"event/ref_reset": 1.0})
  with _StopFlag() as stop:
    step = start
    while step < total:
      batch = iterator.next(step, warm)
      gbatch = sharding.shard_batch(batch, run.mesh)
      state, m, ro = step_fn(state, gbatch, step)
      step += 1
      steps.record(step, m, ro, batch)  # writes the previous step's, read while this one runs
      stopping = _agreed_stop(stop.signal)
      due = step % t_cfg.checkpoint_every == 0 or step == total or stopping is not None
      if due:
        steps.flush()  # a checkpointed step's metrics are written before its checkpoint exists
      heldout_due = (t_cfg.eval_every and step % t_cfg.eval_every == 0) or (warm and step == warm)
      if step < total and (heldout_due or _reasoning_due(run.settings, step, total)):
        steps.flush()
        evaluate(step, heldout=bool(heldout_due))
      if due:
        extra = {"collapse_watch": steps.watch.state()}
        if resets is not None:
          extra["ref_reset"] = resets.state()
        run.ckpt.save(step, state, iterator.get_state(), {**run.meta, "step": step, **extra})
      if stopping is not None:
        break
      why = resets.due(step) if resets is not None and step < total else None
      if why:  # applied before step + 1, after step's checkpoint: a resume repeats it exactly
        steps.flush()
        state = run.reset_ref(state)
        run.writer.write(step, {"event/ref_reset": 1.0})
        steps.say(f"rlp: reference reset after step {step} ({why}): ref <- params, fresh "
                  "optimizer state")
    steps.flush()
  steps.close()
  last = steps.last
  if stopping is not None:
    run.ckpt.wait()
    name = signal.Signals(stopping).name
    who = "" if stop.signal else " by another process"
    run.log(f"rlp: {name} received{who}; checkpoint at step {step} written; rerun the same "
            "command to resume")
    return {**last, "interrupted": int(stopping)}
  run.ckpt.wait()  # the final checkpoint is on disk before the final eval (a rerun completes it)
  if run.eval_docs and step == total:
    last.update(run.evaluate(state.params, step))
  return last
