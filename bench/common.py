"""Timing helpers shared by the benchmarks: best-of-n wall time of a blocking call."""

from __future__ import annotations

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
  return {"platform": d.platform, "device_kind": d.device_kind, "devices": jax.device_count()}


def alternate(fns: dict, rounds: int = 3) -> dict:
  """Runs each callable once per round, alternating, so a noisy machine hurts all equally."""
  out = {k: [] for k in fns}
  for _ in range(rounds):
    for k, f in fns.items():
      t = time.perf_counter()
      f()
      out[k].append(time.perf_counter() - t)
  return {k: min(v) for k, v in out.items()}
