"""Orbax checkpoints of a run: train state, data-iterator state and run metadata.

A damaged newest checkpoint (missing or truncated file) is reported, moved aside to
`<step>.damaged-<n>` (never deleted) and the previous one is used.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import jax
import orbax.checkpoint as ocp


def abstract_like(state, shardings=None):
  """The restore target for `state`: shapes and dtypes, on `shardings` (default: its own)."""
  if shardings is None:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                        state)
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state,
                      shardings)


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
    args = {"state": ocp.args.StandardSave(state),
            "meta": ocp.args.JsonSave(meta)}
    if data_state is not None:
      args["data"] = ocp.args.JsonSave(data_state)
    return self._mgr.save(int(step), args=ocp.args.Composite(**args), force=True)

  def wait(self):
    self._mgr.wait_until_finished()

  def restore_latest(self, abstract_state, log=print) -> tuple[Any, dict | None, dict, int] | None:
    """(state, data_state, meta, step) of the newest readable checkpoint, or None if none exists.

    abstract_state: the target pytree (jax.ShapeDtypeStruct with shardings), which may live on a
    different mesh than the one the checkpoint was written from.
    """
    target = abstract_state
    for step in reversed(self.steps()):
      try:
        args = {"state": ocp.args.StandardRestore(target), "meta": ocp.args.JsonRestore()}
        if os.path.isdir(os.path.join(self.directory, str(step), "data")):
          args["data"] = ocp.args.JsonRestore()
        out = self._mgr.restore(step, args=ocp.args.Composite(**args))
        return (out["state"], out.get("data") if "data" in args else None,
                dict(out["meta"]), step)
      except Exception as e:  # orbax raises many types for a damaged checkpoint
        moved = self._set_aside(step)
        log(f"rlp: checkpoint step {step} in {self.directory} is damaged "
            f"({type(e).__name__}: {str(e)[:300]}); moved it to {moved} and trying the previous one")
    return None

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
    self._mgr.wait_until_finished()
    self._mgr.close()


def log_stderr(msg: str):
  print(msg, file=sys.stderr, flush=True)
