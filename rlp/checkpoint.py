"""Orbax checkpoints of a run: train state, data-iterator state and run metadata.

A damaged newest checkpoint (missing or truncated file) is reported, moved aside to
`<step>.damaged-<n>` (never deleted) and the previous one is used. A readable checkpoint whose
arrays do not fit the run's state (the config changed the model, the optimizer or the reference)
is not damage: restoring refuses with `CheckpointError` and renames nothing.
"""

from __future__ import annotations

import os
import shutil
from typing import Any, NamedTuple

import jax
import orbax.checkpoint as ocp


def abstract_like(state, shardings=None):
  """The restore target for `state`: shapes and dtypes, on `shardings` (default: its own)."""
  if shardings is None:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                        state)
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state,
                      shardings)


class CheckpointError(RuntimeError):
  """A checkpoint that is readable but does not fit the run (incompatible, not damaged)."""


class Restored(NamedTuple):
  """What a checkpoint holds: the train state, the data iterator's state, the run metadata."""
  state: Any
  data_state: dict | None
  meta: dict
  step: int


def restore_run(workdir: str, abstract_state, log=print) -> Restored | None:
  """The newest readable checkpoint of the run in `workdir` (None: it has none), for a reader
  that only restores (a run started from another's weights, an evaluation, a benchmark)."""
  ck = Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False)
  try:
    return ck.restore_latest(abstract_state, log=log)
  finally:
    ck.close()


def _key(k) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


def _shapes(tree) -> dict[str, tuple]:
  """'params/embed' -> shape for every array leaf of a state, a target or a checkpoint's
  metadata tree (dataclass fields, dict keys and tuple indices all become path parts)."""
  return {"/".join(_key(k) for k in path): tuple(leaf.shape)
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
          if hasattr(leaf, "shape")}


def describe_mismatch(saved: dict, wanted: dict, limit: int = 4) -> list[str]:
  diffs = []
  params_first = lambda n: (not n.startswith("params/"), n)  # noqa: E731
  for name in sorted(set(saved) | set(wanted), key=params_first):
    a, b = saved.get(name), wanted.get(name)
    if a != b:
      diffs.append(f"{name}: checkpoint {'absent' if a is None else a}, "
                   f"this config {'absent' if b is None else b}")
  return diffs[:limit] + ([f"... {len(diffs) - limit} more"] if len(diffs) > limit else [])


def async_pays(mesh) -> bool:
  """Whether a run on `mesh` should write its checkpoints in the background. On accelerators the
  state is copied to host memory and written while the next steps run. On the CPU the state
  already lives in host memory and the writer's threads share the step's cores: a background save
  adds a copy of the state to the next step's peak and slows that step about as much as waiting
  for the save (figures: docs/performance.md, Host memory)."""
  return any(d.platform != "cpu" for d in mesh.devices.flat)


class Checkpointer:
  """One CheckpointManager per run directory (`<workdir>/checkpoints`)."""

  def __init__(self, directory: str, keep: int = 3, async_save: bool = True):
    self.directory = os.path.abspath(directory)
    self._mgr = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=async_save))

  def steps(self) -> list[int]:
    return sorted(self._mgr.all_steps())

  def save(self, step: int, state, data_state: dict | None, meta: dict) -> bool:
    self._check_space(step, state)
    args = {"state": ocp.args.StandardSave(state),
            "meta": ocp.args.JsonSave(meta)}
    if data_state is not None:
      args["data"] = ocp.args.JsonSave(data_state)
    try:  # also where an earlier async save's failure surfaces
      return self._mgr.save(int(step), args=ocp.args.Composite(**args), force=True)
    except Exception as e:
      raise self._write_failed(e) from None

  def wait(self):
    try:
      self._mgr.wait_until_finished()
    except Exception as e:  # an async write failed (disk full, permissions, a lost mount)
      raise self._write_failed(e) from None

  def _write_failed(self, e: Exception) -> CheckpointError:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return CheckpointError(
        f"writing a checkpoint in {self.directory} failed: {first[:400]}; the checkpoints "
        f"already there ({self.steps() or 'none'}) are untouched; fix the cause and rerun the "
        "same command to resume")

  def _check_space(self, step: int, state) -> None:
    """Refuses a save that cannot fit on the disk, before writing any of it: a full disk would
    otherwise fail inside orbax's writer threads, mid-checkpoint, as pages of tracebacks."""
    need = sum(sh.data.nbytes for x in jax.tree.leaves(state) if isinstance(x, jax.Array)
               for sh in x.addressable_shards if sh.replica_id == 0)
    free = shutil.disk_usage(self.directory).free
    if free < need * 1.05:
      gib = 2 ** 30
      raise CheckpointError(
          f"not enough disk space for the checkpoint of step {step} in {self.directory}: it "
          f"needs about {need / gib:.2f} GiB and {free / gib:.2f} GiB are free; free some space "
          f"(each run keeps train.keep_checkpoints of them) and rerun the same command to "
          f"resume from step {max(self.steps(), default=0)}")

  def restore_latest(self, abstract_state, log=print) -> Restored | None:
    """The newest readable checkpoint (state, data_state, meta, step), or None if none exists.

    abstract_state: the target pytree (jax.ShapeDtypeStruct with shardings), which may live on a
    different mesh than the one the checkpoint was written from.
    """
    target = abstract_state
    wanted = _shapes(target)
    for step in reversed(self.steps()):
      saved = self._saved_shapes(step)
      if saved is not None and saved != wanted:
        raise CheckpointError(
            f"checkpoint step {step} in {self.directory} was written by a run whose state has "
            "other shapes than this config's (" + "; ".join(describe_mismatch(saved, wanted))
            + "). Nothing was changed. Use a new --workdir, or start a new workdir from this "
            "run's weights with --config.model.init=checkpoint --config.model.path=<this "
            "workdir> (same model shapes); or rerun with the run's own config.json")
      try:
        args = {"state": ocp.args.StandardRestore(target), "meta": ocp.args.JsonRestore()}
        if os.path.isdir(os.path.join(self.directory, str(step), "data")):
          args["data"] = ocp.args.JsonRestore()
        out = self._mgr.restore(step, args=ocp.args.Composite(**args))
        return Restored(out["state"], out.get("data") if "data" in args else None,
                        dict(out["meta"]), step)
      except Exception as e:  # orbax raises many types for a damaged checkpoint
        moved = self._set_aside(step)
        log(f"rlp: checkpoint step {step} in {self.directory} is damaged "
            f"({type(e).__name__}: {str(e)[:300]}); moved it to {moved} and trying the previous one")
    return None

  def _saved_shapes(self, step: int) -> dict | None:
    """The array shapes stored in a checkpoint's state item, or None when they cannot be read
    (a damaged checkpoint: the restore below then reports it)."""
    from absl import logging
    level = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)  # orbax warns that a step-level metadata file is absent
    try:
      with ocp.StandardCheckpointer() as reader:
        md = reader.metadata(os.path.join(self.directory, str(step), "state"))
      tree = getattr(md, "item_metadata", md)
      leaves = jax.tree_util.tree_leaves(tree)
      if not leaves or not all(hasattr(x, "shape") for x in leaves):
        return None  # metadata missing or partial: damage, not a different config
      return _shapes(tree)
    except Exception:  # noqa: BLE001  any unreadable metadata is damage, handled by the restore
      return None
    finally:
      logging.set_verbosity(level)

  def _set_aside(self, step: int) -> str:
    src = os.path.join(self.directory, str(step))
    n = 0
    while os.path.exists(f"{src}.damaged-{n}"):
      n += 1
    dst = f"{src}.damaged-{n}"
    if jax.process_index() == 0 and os.path.exists(src):
      os.rename(src, dst)
    self._mgr.reload()
    return dst

  def close(self):
    self.wait()
    self._mgr.close()
