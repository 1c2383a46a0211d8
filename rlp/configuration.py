"""Validating a run config (before anything compiles) and building the model, tokenizer and step
config from it."""

from __future__ import annotations

import importlib.util
import json
import os

import models
from models.tokenizer import Tokenizer, load_tokenizer
from rlp import sampler as sampler_lib
from rlp import schema
from rlp import sharding
from rlp import trainer
from rlp.thought_format import thought_format


SELECTIONS = schema.SELECTIONS
ConfigError = schema.ConfigError


def checks(c):
  """(field, value, ok, allowed) for every rule a config must meet: the schema's (each field's own
  rule, then the relations between fields) and what the machine must hold (the model file, an
  installed wandb). validate() reports the failures; rlp-eval checks the fields its flags set."""
  yield from schema.checks(c)
  m = c.model
  if m.init in ("gguf", "hf"):
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
  if c.train.wandb_project:
    yield "train.wandb_project", c.train.wandb_project, importlib.util.find_spec(
        "wandb") is not None, "a project name only with wandb installed (pip install -e " \
        "'.[wandb]'); \"\" = off"


def validate(config, n_devices: int | None = None) -> schema.Run:
  """The typed run of a ConfigDict, or a ConfigError with one line per bad field (the schema's
  rules, the machine's, and with n_devices the mesh's)."""
  errors = [schema.line(field, value, allowed)
            for field, value, ok, allowed in checks(config) if not ok]
  if n_devices is not None and not any(e.startswith("config.mesh.") for e in errors):
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
  return schema.parse(config)


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


def load_run_model(config) -> tuple[models.Transformer, Tokenizer]:
  """A run's model before training and its tokenizer: for model.init=checkpoint, the model of
  the run it starts from (whose params the caller restores from that run's checkpoint)."""
  if config.model.init == "checkpoint":
    return load_model_and_tokenizer(load_run_config(config.model.path))
  return load_model_and_tokenizer(config)


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


def step_config(config, tok: Tokenizer) -> trainer.StepConfig:
  """The step's settings: each StepConfig field declared `schema.from_run` is read from the config
  field it names; the others are derived here."""
  r = config.rlp
  values = {name: schema.value(config, path)
            for name, path in schema.run_fields(trainer.StepConfig)}
  return trainer.StepConfig(
      **values, sampler=sampler_config(config, tok),
      truncated_reward=schema.truncated_reward(r.truncated_reward),
      baseline_exclude=thought_format(tok, r.template).open_token,
      ema_head_at_positions=None)  # decided by trainer.resolve when the step is built


def load_run_config(workdir: str):
  """A run's config.json over the schema's defaults, so a workdir written before a key existed
  still loads (the key gets its default)."""
  path = os.path.join(workdir, "config.json")
  try:
    with open(path) as f:
      saved = json.load(f)
  except (OSError, ValueError) as e:
    raise ConfigError(f"{path} cannot be read as a run's config ({e}); is {workdir} a run's "
                      "workdir?") from None
  config = schema.config_dict()
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
