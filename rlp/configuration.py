"""Validating a run config (before anything compiles) and building the model, tokenizer and step
config from it."""

from __future__ import annotations

import dataclasses
import importlib.util
import os

import models
from models.tokenizer import Tokenizer, load_tokenizer
from rlp import sampler as sampler_lib
from rlp import positions
from rlp import sharding
from rlp import thought_eval
from rlp import trainer
from rlp.thought_format import thought_format


SELECTIONS = positions.SELECTIONS


class ConfigError(ValueError):
  """One line per bad field: the field, its value and the allowed range."""


def checks(c):
  """(field, value, ok, allowed) for every rule a config must meet (validate() reports the
  failures; rlp-eval checks the fields its flags set)."""
  d, r, o, t, m = c.data, c.rlp, c.optim, c.train, c.model
  yield "objective", c.objective, c.objective in trainer.OBJECTIVES, f"one of {trainer.OBJECTIVES}"
  yield "model.init", m.init, m.init in ("random", "gguf", "hf", "checkpoint"), \
      "random | gguf | hf | checkpoint"
  yield "model.dtype", m.dtype, m.dtype in ("float32", "bfloat16", "float16"), \
      "float32 | bfloat16 | float16"
  yield "model.remat", m.remat, m.remat in ("none", "full", "dots"), "none | full | dots"
  yield "model.attention", m.attention, m.attention in ("xla", "cudnn"), "xla | cudnn"
  for name in ("seq_len", "batch_size", "positions_per_doc", "min_prefix"):
    v = d[name]
    yield f"data.{name}", v, isinstance(v, int) and v >= 1, ">= 1"
  yield "data.min_prefix", d.min_prefix, d.min_prefix < d.seq_len, f"< data.seq_len ({d.seq_len})"
  yield "data.selection", d.selection, d.selection in SELECTIONS, " | ".join(SELECTIONS)
  if d.selection == "marker":
    yield "data.position_marker", d.position_marker or '""', bool(d.position_marker), \
        "non-empty text with selection=marker (the target is the token after it)"
  w = c.warmup
  yield "warmup.steps", w.steps, isinstance(w.steps, int) and w.steps >= 0, ">= 0 (0 = no warm-up)"
  if w.steps:
    yield "warmup.source", w.source or '""', bool(w.source), \
        "a data source with thoughts in the run's format (e.g. toy:train:0.5) when warmup.steps > 0"
    yield "warmup.lr", w.lr, w.lr > 0, "> 0"
  yield "data.workers", d.workers, d.workers >= 0, ">= 0"
  yield "rlp.group_size", r.group_size, r.group_size >= 2, ">= 2 (advantages need a group)"
  for name, (_, allowed) in sampler_lib.SAMPLER_RULES.items():  # the sampler's: one rule each
    yield f"rlp.{name}", r[name], sampler_lib.sampler_rule_holds(name, r[name]), allowed
  yield "rlp.min_thought_len", r.min_thought_len, 1 <= r.min_thought_len <= max(
      r.max_thought_len, 1), f"in [1, rlp.max_thought_len ({r.max_thought_len})]"
  for name, (_, allowed) in trainer.STEP_RULES.items():  # the step's fields: one rule each
    group = _STEP_FIELD_GROUP.get(name, "rlp")
    yield f"{group}.{name}", c[group][name], trainer.rule_holds(name, c[group][name]), allowed
  for name in ("ref_reset_every", "ref_reset_on_plateau"):
    yield f"rlp.{name}", r[name], isinstance(r[name], int) and r[name] >= 0, ">= 0 (0 = off)"
  if r.ref_reset_on_plateau:
    yield "train.eval_every", t.eval_every, t.eval_every > 0, \
        "> 0 with rlp.ref_reset_on_plateau (the plateau is measured on held-out evals)"
  yield "rlp.truncated_reward", r.truncated_reward, _truncated_reward(r.truncated_reward) \
      is not None, "keep | zero | a number"
  # what depends on other fields (checked once the field's own rule holds)
  if trainer.rule_holds("minibatches", r.minibatches):
    yield "rlp.minibatches", r.minibatches, d.batch_size % r.minibatches == 0, \
        f">= 1 and divide data.batch_size ({d.batch_size})"
    mb_docs = d.batch_size // r.minibatches
    if trainer.rule_holds("grad_accum", r.grad_accum):
      yield "rlp.grad_accum", r.grad_accum, mb_docs % r.grad_accum == 0, \
          f">= 1 and divide the documents per minibatch ({mb_docs} = data.batch_size / " \
          "rlp.minibatches)"
  if trainer.rule_holds("rollout_batch", r.rollout_batch):
    yield "rlp.rollout_batch", r.rollout_batch, r.rollout_batch == 0 or (
        d.batch_size % r.rollout_batch == 0), \
        f"0 (the whole batch) or a divisor of data.batch_size ({d.batch_size})"
  yield "rlp.scorer_weight", r.scorer_weight, not (r.scorer_weight > 0 and c.objective == "rpt"), \
      ">= 0, and 0 for objective=rpt"
  yield "optim.lr", o.lr, o.lr > 0, "> 0"
  yield "optim.schedule", o.schedule, o.schedule in ("constant", "cosine"), "constant | cosine"
  yield "optim.warmup_steps", o.warmup_steps, o.warmup_steps >= 0, ">= 0"
  yield "optim.grad_clip", o.grad_clip, o.grad_clip >= 0, ">= 0 (0 = off)"
  yield "train.steps", t.steps, t.steps >= 1, ">= 1"
  for name in ("log_every", "checkpoint_every", "keep_checkpoints", "max_consecutive_skips"):
    yield f"train.{name}", t[name], t[name] >= 1, ">= 1"
  yield "train.collapse_frac", t.collapse_frac, 0 <= t.collapse_frac < 1, "in [0, 1) (0 = off)"
  for name in ("eval_every", "sample_every", "eval_docs", "eval_positions"):
    yield f"train.{name}", t[name], t[name] >= 0, ">= 0"
  placebos = tuple(t.eval_placebos)
  yield "train.eval_placebos", placebos, all(p in thought_eval.PLACEBOS for p in placebos), \
      f"any of {', '.join(thought_eval.PLACEBOS)} (or ())"
  if t.wandb_project:
    yield "train.wandb_project", t.wandb_project, importlib.util.find_spec("wandb") is not None, \
        "a project name only with wandb installed (pip install -e '.[wandb]'); \"\" = off"
  yield "train.eval_reasoning_every", t.eval_reasoning_every, isinstance(
      t.eval_reasoning_every, int) and t.eval_reasoning_every >= 0, ">= 0 (0 = off)"
  if t.eval_reasoning_every:
    yield "train.eval_positions", t.eval_positions, t.eval_positions > 0 and t.eval_docs > 0 and \
        bool(d.eval_source), "> 0, with train.eval_docs > 0 and a data.eval_source, when " \
        "train.eval_reasoning_every > 0 (its problems are the thought eval's held-out positions)"
    ks = tuple(t.eval_reasoning_ks)
    yield "train.eval_reasoning_samples", t.eval_reasoning_samples, \
        t.eval_reasoning_samples >= 1, ">= 1"
    yield "train.eval_reasoning_ks", ks, bool(ks) and all(
        isinstance(k, int) and 1 <= k <= t.eval_reasoning_samples for k in ks), \
        f"non-empty, each k in [1, train.eval_reasoning_samples ({t.eval_reasoning_samples})]"
  if m.init == "random":
    yield "model.n_heads", m.n_heads, m.n_heads % max(m.n_kv_heads, 1) == 0, \
        f"a multiple of model.n_kv_heads ({m.n_kv_heads})"
    yield "model.head_dim", m.head_dim, m.head_dim >= 2 and m.head_dim % 2 == 0, "even and >= 2"
    for name in ("vocab_size", "d_model", "n_layers", "n_kv_heads", "d_ff"):
      yield f"model.{name}", m[name], m[name] >= 1, ">= 1"
  elif m.init in ("gguf", "hf"):
    path = m.path
    if m.init == "gguf" and path == "smollm2":
      ok, why = True, ""
      try:
        models.smollm2_path()
      except models.WeightsError as e:
        ok, why = False, str(e)
      yield "model.path", path, ok, why
    else:
      kind = "file" if m.init == "gguf" else "directory"
      exists = os.path.isfile(path) if m.init == "gguf" else os.path.isdir(path)
      yield "model.path", path or '""', bool(path) and exists, f"an existing {kind} (or 'smollm2')"
  elif m.init == "checkpoint":
    yield "model.path", m.path or '""', bool(m.path) and os.path.isdir(
        os.path.join(m.path, "checkpoints")), "a previous run's workdir (with checkpoints/)"


def _truncated_reward(v):
  if v in ("keep", "zero"):
    return v
  try:
    return float(v)
  except (TypeError, ValueError):
    return None


def validate(config, n_devices: int | None = None) -> None:
  errors = [f"config.{field} = {value!r} is invalid: must be {allowed}"
            for field, value, ok, allowed in checks(config) if not ok]
  if n_devices is not None:
    dims = (config.mesh.data, config.mesh.fsdp, config.mesh.tensor)
    try:
      shape = sharding.mesh_shape(dims, n_devices)
      div = shape[0] * shape[1]
      if config.data.batch_size % div:
        errors.append(f"config.data.batch_size = {config.data.batch_size} is invalid: must be a "
                      f"multiple of mesh data x fsdp ({div})")
      rb = config.rlp.rollout_batch
      if rb and rb % div:
        errors.append(f"config.rlp.rollout_batch = {rb} is invalid: must be a multiple of mesh "
                      f"data x fsdp ({div}), so every device samples in every chunk")
    except sharding.MeshError as e:
      import jax
      errors.append(f"config.mesh = {dims} is invalid: {e} (JAX sees {n_devices} "
                    f"{jax.default_backend()} device(s); see README: Accelerators)")
  if errors:
    raise ConfigError("\n".join(errors))


def model_config(config) -> models.ModelConfig:
  m = config.model
  return models.ModelConfig(vocab_size=m.vocab_size, d_model=m.d_model, n_layers=m.n_layers,
                            n_heads=m.n_heads, n_kv_heads=m.n_kv_heads, head_dim=m.head_dim,
                            d_ff=m.d_ff, rope_theta=m.rope_theta, tie_embeddings=m.tie_embeddings,
                            max_seq_len=max(config.data.seq_len * 4, 2048), **_runtime(config))


def _runtime(config) -> dict:
  """Compute settings; cuDNN attention falls back to XLA's where there is no NVIDIA GPU (the run
  warns about it at start: launch/cli.environment_warnings)."""
  import jax
  m = config.model
  attention = m.attention if jax.default_backend() == "gpu" else "xla"
  return dict(dtype=m.dtype, remat=m.remat, scan_layers=m.scan_layers, attention=attention)


def load_model_and_tokenizer(config) -> tuple[models.Transformer, Tokenizer]:
  """The model (random init, GGUF, HF) and its tokenizer, per config.model / config.data."""
  from flax import nnx
  m = config.model
  tok = load_tokenizer(config.data.tokenizer) if config.data.tokenizer else None
  if m.init == "random":
    if tok is None:
      raise ConfigError("config.data.tokenizer is required for model.init=random (e.g. 'bytes')")
    model = models.Transformer(model_config(config), rngs=nnx.Rngs(config.seed))
  elif m.init == "gguf":
    path = models.smollm2_path() if m.path == "smollm2" else m.path
    model, own = models.load_gguf(path, with_tokenizer=True, **_runtime(config))
    tok = tok or own
  elif m.init == "hf":
    model = models.load_hf(m.path, **_runtime(config))
    tok = tok or load_tokenizer(m.path)
  else:
    raise ConfigError("model.init=checkpoint is resolved by the training loop")
  return model, tok


def sampler_config(config, tok: Tokenizer) -> sampler_lib.SamplerConfig:
  """The run's sampler: its thought format (rlp/thought_format.py) and sampling settings. The
  trainer, the in-run eval and `rlp-eval` on the run's workdir all use this."""
  r = config.rlp
  fmt = thought_format(tok, r.template)
  return sampler_lib.SamplerConfig(group_size=r.group_size, max_thought_len=r.max_thought_len,
                                   min_thought_len=r.min_thought_len, temperature=r.temperature,
                                   top_k=r.top_k, top_p=r.top_p, prompt_ids=fmt.prompt_ids,
                                   close_ids=fmt.close_ids, close_alts=fmt.close_alts,
                                   predict=config.objective == "rpt")


def marker_ids(config, tok: Tokenizer) -> tuple[int, ...] | None:
  """The token ids after which selection=marker places targets (None for other selections)."""
  d = config.data
  return tuple(tok.encode(d.position_marker)) if d.selection == "marker" else None


# Where a StepConfig field lives in the run config when not under config.rlp (every field named
# in trainer.STEP_RULES, or read by step_config, has exactly one home).
_STEP_FIELD_GROUP = {"selection": "data", "positions_per_doc": "data", "min_prefix": "data",
                     "loss_chunk": "train"}
# StepConfig fields computed from the config rather than read from a key of the same name
_STEP_DERIVED = ("objective", "sampler", "truncated_reward", "baseline_exclude",
                 "ema_head_at_positions")


def step_config(config, tok: Tokenizer) -> trainer.StepConfig:
  """The step's settings: every StepConfig field is read from the config key of the same name
  (config.rlp, or the group in _STEP_FIELD_GROUP), except the few derived here; so a new step
  setting is one StepConfig field, one key in configs/base.py and (if it has a range) one rule
  in trainer.STEP_RULES."""
  r = config.rlp
  values = dict(objective=config.objective, sampler=sampler_config(config, tok),
                truncated_reward=_truncated_reward(r.truncated_reward),
                baseline_exclude=thought_format(tok, r.template).open_token,
                ema_head_at_positions=None)  # decided by trainer.resolve when the step is built
  for f in dataclasses.fields(trainer.StepConfig):
    if f.name not in _STEP_DERIVED:
      values[f.name] = config[_STEP_FIELD_GROUP.get(f.name, "rlp")][f.name]
  return trainer.StepConfig(**values)


def load_run_config(workdir: str):
  """A run's config.json over configs/base.py's defaults, so a workdir written before a key
  existed still loads (the key gets its default)."""
  import json
  from configs import base
  path = os.path.join(workdir, "config.json")
  try:
    with open(path) as f:
      saved = json.load(f)
  except (OSError, ValueError) as e:
    raise ConfigError(f"{path} cannot be read as a run's config ({e}); is {workdir} a run's "
                      "workdir?") from None
  config = base.get_config()
  _overlay(config, saved)
  return config


def _overlay(config, saved: dict) -> None:
  for k, v in saved.items():
    if k in config and hasattr(config[k], "items") and isinstance(v, dict):
      _overlay(config[k], v)
      continue
    if k in config and isinstance(config[k], tuple) and isinstance(v, list):
      v = tuple(v)  # JSON writes tuples as lists
    with config.unlocked():
      if k in config and config[k] is not None and v is not None and type(v) is not type(
          config[k]) and not (isinstance(config[k], float) and isinstance(v, int)):
        del config[k]  # a value of another type than the default's: the saved one wins
      config[k] = v


def optimizer(config):
  o = config.optim
  return trainer.make_optimizer(o.lr, o.warmup_steps, config.train.steps, o.schedule,
                                o.weight_decay, o.b1, o.b2, o.grad_clip)


def warmup_optimizer(config):
  """The format warm-up's optimizer: the run's AdamW at warmup.lr, reached linearly over the first
  tenth of the warm-up, then constant. Same state layout as the run's, so the train state's
  shardings and checkpoints do not change at the switch."""
  o = config.optim
  return trainer.make_optimizer(config.warmup.lr, max(1, config.warmup.steps // 10), 0, "constant",
                                o.weight_decay, o.b1, o.b2, o.grad_clip)
