"""Timing helpers shared by the benchmarks: best-of-n wall time of a blocking call."""

from __future__ import annotations

import os
import statistics
import time

import jax


def timeit(fn, *, warmup: int = 1, iters: int = 3) -> dict:
  """Calls fn() (which must block until its result is ready) and returns best/median seconds."""
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(iters):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return {"best": min(times), "median": statistics.median(times)}


def block(x):
  return jax.block_until_ready(x)


def device_info() -> dict:
  d = jax.devices()[0]
  out = {"platform": d.platform, "device_kind": d.device_kind, "devices": jax.device_count()}
  malloc = {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}
  if malloc:  # glibc malloc settings change CPU step times by ~15% (README, Speed): say so
    out["malloc_env"] = malloc
  return out


def alternate(fns: dict, rounds: int = 3) -> dict:
  """Runs each callable once per round, alternating, so a noisy machine hurts all equally."""
  out = {k: [] for k in fns}
  for _ in range(rounds):
    for k, f in fns.items():
      t = time.perf_counter()
      f()
      out[k].append(time.perf_counter() - t)
  return {k: min(v) for k, v in out.items()}


def decode_over_bound(model, rollout_at, *, thought: int, streams: int, prefix_kv_tokens: float,
                      mean_prefix: float, dtype: str, iters: int) -> dict:
  """The measured decode step against its lower bound (rlp/metrics.py decode_step_bound).

  rollout_at(T) returns a blocking callable that samples thoughts of exactly T tokens; the decode
  step is the marginal time per token between T and T // 2 (the prefill cancels), so the bound
  uses the mean cache fill of those steps: the prefixes (shared ones counted once) plus 3T/4 per
  stream."""
  import jax.numpy as jnp
  from flax import nnx
  from rlp import metrics
  half = max(1, thought // 2)
  if half == thought:
    raise ValueError("decode_over_bound needs thought >= 2")
  fns = {"full": rollout_at(thought), "half": rollout_at(half)}
  for f in fns.values():
    f()
  best = alternate(fns, rounds=iters)
  step = max(best["full"] - best["half"], 0.0) / (thought - half)
  filled = (thought + half) / 2
  weight_bytes = sum(x.nbytes for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
  bound = metrics.decode_step_bound(model.config, streams=streams,
                                    kv_tokens=prefix_kv_tokens + streams * filled,
                                    attended=mean_prefix + filled, weight_bytes=weight_bytes,
                                    kv_value_bytes=jnp.dtype(dtype).itemsize,
                                    flops_rate=metrics.measured_peak_flops(dtype),
                                    bandwidth=metrics.measured_bandwidth())
  return {"decode_step_seconds": step, "decode_streams": streams, **bound,
          "decode_over_bound": step / bound["bound_seconds"]}
