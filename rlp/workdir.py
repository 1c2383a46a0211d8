"""What a run keeps in its workdir besides checkpoints and metrics: its config (config.json, the
previous one kept on a change), the check that a rerun's config is one the run can resume, and
the held-out eval's fixed positions (eval_positions.json)."""

from __future__ import annotations

import json
import os

import jax
from flax import nnx

from rlp import configuration
from rlp import thought_eval
from rlp.thought_format import thought_format


def write_config(config, workdir, step, log):
  """Writes the run's config.json, keeping a changed previous one as config.until-step-N.json.
  Process 0 alone touches the file: with every process reading, renaming and writing the one
  shared file, one process could find it gone between its check and its read, fail, and leave
  the others waiting in the first step's collectives."""
  if jax.process_index() != 0:
    return
  path = os.path.join(workdir, "config.json")
  new = config.to_json_best_effort(indent=2, sort_keys=True)
  if os.path.exists(path):
    with open(path) as f:
      old = f.read()
    if old == new:
      return
    keep = os.path.join(workdir, f"config.until-step-{step}.json")
    os.replace(path, keep)
    log(f"rlp: config changed since the last run; the previous one is kept as {keep}")
  with open(path, "w") as f:
    f.write(new)


# Fields a resume cannot honour: the run's structure (what it trains, on which documents and
# positions, with which thought format and warm-up, from which start). A changed one is refused
# before anything in the workdir is touched; any other field (steps, eval / checkpoint cadence,
# logging, learning rate, mesh, memory settings) may change on resume (config.json then keeps
# the previous config as config.until-step-N.json).
STRUCTURE = ("objective", "seed", "model.init", "model.path", "model.vocab_size", "model.d_model",
             "model.n_layers", "model.n_heads", "model.n_kv_heads", "model.head_dim",
             "model.d_ff", "model.rope_theta", "model.tie_embeddings", "data.source",
             "data.tokenizer", "data.num_docs", "data.seq_len", "data.batch_size",
             "data.positions_per_doc", "data.min_prefix", "data.selection",
             "data.position_marker", "warmup.steps", "warmup.source", "warmup.lr",
             "rlp.template")


def _has_checkpoint(workdir) -> bool:
  d = os.path.join(workdir, "checkpoints")
  return os.path.isdir(d) and any(n.isdigit() for n in os.listdir(d))


def refuse_structural_changes(config, workdir) -> None:
  """A workdir that holds a run's checkpoint resumes only a config of the same structure
  (STRUCTURE); otherwise a ConfigError names the fields and the two ways forward."""
  if not (os.path.exists(os.path.join(workdir, "config.json")) and _has_checkpoint(workdir)):
    return
  old = _flatten(json.loads(configuration.load_run_config(workdir).to_json_best_effort()))
  new = _flatten(json.loads(config.to_json_best_effort()))
  changed = [k for k in STRUCTURE if old.get(k) != new.get(k)]
  if not changed:
    return
  diff = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed)
  keep = " ".join(f"--config.{k}={_flag_value(old.get(k))}" for k in changed)
  raise configuration.ConfigError(
      f"{workdir} holds a run whose {', '.join(changed)} differ from this config ({diff}), "
      f"which a resume cannot honour. To resume it, rerun with its values ({keep}); for a new "
      f"run use another --workdir (from this run's weights: --config.model.init=checkpoint "
      f"--config.model.path={workdir}). Nothing in {workdir} was changed")


def _flag_value(v) -> str:
  if isinstance(v, str):
    return repr(v) if not v or any(c in v for c in " '\"") else v
  return json.dumps(v)


def config_changes(config, workdir, limit: int = 6) -> list[str]:
  """'model.d_model: 64 -> 32' for each field that differs from the workdir's config.json."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    old = _flatten(json.load(f))
  new = _flatten(json.loads(config.to_json_best_effort()))
  out = [f"{k}: {old.get(k, '(absent)')!r} -> {new.get(k, '(absent)')!r}"
         for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
  return out[:limit] + ([f"... {len(out) - limit} more"] if len(out) > limit else [])


def _flatten(d, prefix=""):
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[prefix + k] = v
  return out


def eval_positions(config, tok, graphdef, params, eval_docs, workdir, log=print):
  """The in-run eval's positions, fixed for the whole run: chosen with the params the run starts
  from (a run and its twins from the same start share them) and written to
  WORKDIR/eval_positions.json (rlp-eval takes the file as --positions_from); read back when the
  run resumes, unless the eval's documents or positions per document changed since."""
  path = os.path.join(workdir, "eval_positions.json")
  d = config.data
  which = {"likelihood_source": d.eval_source, "num_docs": len(eval_docs),
           "per_doc": config.train.eval_positions}
  if os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    if {k: saved.get(k) for k in which} == which:
      return thought_eval.EvalPositions.from_json(saved["positions"], eval_docs, d.seq_len, path)
    log(f"rlp: the held-out eval's documents or positions changed since {path} was written; "
        "choosing them again with the run's starting model")
  sel = thought_eval.Selection(kind=d.selection, per_doc=config.train.eval_positions,
                               min_prefix=d.min_prefix,
                               marker_ids=configuration.marker_ids(config, tok), seed=config.seed)
  at = thought_eval.choose(eval_docs, d.seq_len, sel, nnx.merge(graphdef, params),
                           "the model the run started from", thought_format(tok, config.rlp.template).open_token,
                           batch_size=max(1, min(len(eval_docs), 8)))
  if jax.process_index() == 0:
    with open(path, "w") as f:
      json.dump({**which, "positions": at.to_json()}, f)
  return at
