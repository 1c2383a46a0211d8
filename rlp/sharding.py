"""Mesh from config, one short logical-axis rule table, and shardings for the train state and batch.

Mesh axes are ("data", "fsdp", "tensor"). Parameters carry logical axes (models/transformer.py);
RULES maps each logical axis to mesh axes. A mesh axis is used at most once per array, and an
array dimension that the mesh axes do not divide is left replicated (so tiny test models run on
any mesh).
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Sequence

import jax
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")
RULES = (
    ("batch", ("data", "fsdp")),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("layers", None),
)


class MeshError(ValueError):
  pass


def mesh_shape(dims: Sequence[int], n_devices: int) -> tuple[int, ...]:
  """Resolves one -1 entry to fill the devices; checks the product."""
  dims = [int(d) for d in dims]
  if len(dims) != len(MESH_AXES):
    raise MeshError(f"mesh needs {len(MESH_AXES)} sizes {MESH_AXES} (got {dims})")
  if dims.count(-1) > 1 or any(d == 0 or d < -1 for d in dims):
    raise MeshError(f"mesh sizes must be positive with at most one -1 (got {dims})")
  known = math.prod(d for d in dims if d != -1)
  if n_devices % known:
    raise MeshError(f"mesh {dims} does not divide the {n_devices} devices; choose sizes whose "
                    f"product divides {n_devices}")
  return tuple(n_devices // known if d == -1 else d for d in dims)


def make_mesh(dims: Sequence[int] = (-1, 1, 1), devices=None) -> Mesh:
  """A mesh over the first prod(dims) devices (all of them when one size is -1)."""
  devices = devices if devices is not None else jax.devices()
  shape = mesh_shape(dims, len(devices))
  return Mesh(np.asarray(devices[:math.prod(shape)]).reshape(shape), MESH_AXES)


def open_collectives(mesh: Mesh, timeout_s: int = 1800) -> int:
  """Multi-process CPU runs (gloo collectives): opens, with all processes together, every
  communicator the run's programs can use; returns how many warm-up programs ran (0 elsewhere).

  Gloo connects the devices of a group the first time a collective over that group runs, and
  fails ("Gloo context initialization failed: ... GetKeyValue() timed out") when the other
  processes do not arrive within a fixed 30 s. Processes reach their first collectives apart by
  whatever each did first: process 0 alone writes metrics and TensorBoard, a compile can hit
  the persistent cache in one process and miss in the other, a busy host slows one of them. An
  open communicator waits for a late peer as long as needed (130 s measured), so all of them are
  opened here, right after a coordination-service barrier (no gloo in it, `timeout_s` long),
  with tiny programs: a sum over every combination of the mesh's axes of size > 1, and one over
  the process groups of jax.experimental.multihost_utils (which Orbax's barriers and the agreed
  stop use). Accelerators connect their collectives at start-up and need none of this."""
  if jax.process_count() == 1 or mesh.devices.flat[0].platform != "cpu":
    return 0
  from orbax.checkpoint import multihost
  multihost.get_barrier_sync_fn()(key="rlp_open_collectives", timeout_ms=timeout_s * 1000)
  names = [a for a in mesh.axis_names if mesh.shape[a] > 1]
  combos = [c for r in range(1, len(names) + 1) for c in itertools.combinations(names, r)]
  for axes in combos:
    _warm_sum(mesh, axes)
  # the process groups of multihost_utils (one device of each process per group), on its mesh
  _warm_sum(Mesh(np.asarray(jax.devices()).reshape(jax.process_count(), -1), ("p", "local")),
            ("p",))
  return len(combos) + 1


def _warm_sum(mesh: Mesh, axes: tuple[str, ...]) -> None:
  """A sum of ones over `axes`, waited for on every local device (each connects its own
  groups) and checked."""
  n = math.prod(mesh.shape[a] for a in axes)
  x = jax.make_array_from_callback((n,), NamedSharding(mesh, P(axes)),
                                   lambda idx: np.ones((1,), np.float32))
  total = jax.jit(jax.shard_map(lambda v: jax.lax.psum(v, axes), mesh=mesh, in_specs=P(axes),
                                out_specs=P()))(x)
  got = [float(np.asarray(s.data)[0]) for s in jax.block_until_ready(total).addressable_shards]
  if got != [n] * len(got):
    raise RuntimeError(f"the collective warm-up over mesh axes {axes} summed to {got}, not {n}")


def logical_to_spec(axes: Sequence[str | None], shape: Sequence[int], mesh: Mesh) -> P:
  rules = dict(RULES)
  used: set[str] = set()
  out = []
  for name, size in zip(axes, shape):
    target = rules.get(name) if name else None
    targets = (target,) if isinstance(target, str) else tuple(target or ())
    picked = tuple(t for t in targets if t not in used and mesh.shape[t] > 1)
    if picked and size % math.prod(mesh.shape[t] for t in picked) == 0:
      used.update(picked)
      out.append(picked[0] if len(picked) == 1 else picked)
    else:
      out.append(None)
  return P(*out)


def logical_axes(model) -> Any:
  """Pure dict (the layout of TrainState.params) of each parameter's logical axes, as P(...)."""
  st = nnx.state(model, nnx.Param)
  return nnx.to_pure_dict(jax.tree.map(
      lambda v: v.replace(P(*(v.get_metadata().get("logical_axes") or (None,) * v[...].ndim))),
      st, is_leaf=lambda x: isinstance(x, nnx.Variable)))


def param_shardings(axes_tree, params, mesh: Mesh):
  return jax.tree.map(lambda ax, x: NamedSharding(mesh, logical_to_spec(tuple(ax), x.shape, mesh)),
                      axes_tree, params)


def state_shardings(state, tx, mesh: Mesh, axes_tree):
  """Shardings for a TrainState: params, EMA, ref and Adam moments follow the parameters."""
  ps = param_shardings(axes_tree, state.params, mesh)
  repl = NamedSharding(mesh, P())
  opt = optax.tree_map_params(tx, lambda _, s: s, state.opt_state, ps,
                              transform_non_params=lambda _: repl)
  return state.replace(step=repl, params=ps, ema=ps, ref=None if state.ref is None else ps,
                       opt_state=opt, rng=repl, skips=repl)


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
  return NamedSharding(mesh, P(("data", "fsdp"), *([None] * (ndim - 1))))


def step_shardings(state_shardings, mesh: Mesh) -> dict:
  """in_shardings / out_shardings of a jitted step (state, batch) -> (state, metrics, rollout):
  the state as placed, every batch and rollout array split on its leading (document) axis over
  data x fsdp, the scalar metrics replicated."""
  docs = NamedSharding(mesh, P(("data", "fsdp")))
  return {"in_shardings": (state_shardings, docs),
          "out_shardings": (state_shardings, NamedSharding(mesh, P()), docs)}


def shard_batch(batch, mesh: Mesh):
  """Places a host batch (a DocBatch / LMBatch, or any pytree of arrays) on the mesh, the batch
  axis over data x fsdp; multi-process aware (each process gives its own rows)."""
  def put(v):
    v = np.asarray(v)
    sh = batch_sharding(mesh, v.ndim)
    if jax.process_count() > 1:
      return jax.make_array_from_process_local_data(sh, v)
    return jax.device_put(v, sh)
  return jax.tree.map(put, batch)
