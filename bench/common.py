"""Timing helpers shared by the benchmarks: best-of-n wall time of a blocking call."""

from __future__ import annotations

import functools
import os
import statistics
import time

import jax
import jax.numpy as jnp

from rlp import sampler as sampler_lib


@functools.lru_cache(maxsize=None)
def measured_bandwidth(repeats: int = 5) -> float:
  """Best rate (bytes/s) at which one device reads a large array once (a sum and a max over it,
  the faster counts): the memory term of the decode step's lower bound."""
  accel = jax.devices()[0].platform != "cpu"
  x = jax.random.normal(jax.random.key(0), ((256 if accel else 64) * 1024 * 1024,), jnp.float32)
  best = 0.0
  for f in (jax.jit(jnp.sum), jax.jit(jnp.max)):
    f(x).block_until_ready()
    for _ in range(repeats):
      t = time.perf_counter()
      f(x).block_until_ready()
      best = max(best, x.nbytes / (time.perf_counter() - t))
  return best


def decode_step_bound(cfg, *, streams: int, kv_tokens: float, attended: float,
                      weight_bytes: int, kv_value_bytes: int, flops_rate: float,
                      bandwidth: float) -> dict:
  """The lower bound of one decode step of `streams` sequences on one device: the larger of
  (a) streaming every weight once plus the KV cache it must read (`kv_tokens` cached tokens in
  all, shared prefixes counted once) at `bandwidth`, and (b) the step's matmul FLOPs (each stream
  attends to `attended` tokens on average) at `flops_rate`."""
  weights = weight_bytes
  kv = cfg.n_layers * 2 * cfg.n_kv_heads * cfg.head_dim * kv_value_bytes * kv_tokens
  n = cfg.num_params(include_embedding=False) + cfg.vocab_size * cfg.d_model
  flops = streams * (2 * n + 4 * cfg.n_layers * cfg.n_heads * cfg.head_dim * attended)
  mem_s, flop_s = (weights + kv) / bandwidth, flops / flops_rate
  return {"bound_weight_bytes": weights, "bound_kv_bytes": kv, "bound_memory_seconds": mem_s,
          "bound_flops": flops, "bound_matmul_seconds": flop_s,
          "bound_seconds": max(mem_s, flop_s),
          "bound_by": "memory" if mem_s >= flop_s else "matmul",
          "bandwidth_bytes_per_sec": bandwidth, "matmul_flops_per_sec": flops_rate}


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


def decode_layers(sampler_cfg) -> str:
  """How the rollout's decode loop runs its layers under this sampler config: "unroll" or "scan"."""
  return "unroll" if sampler_lib.unrolls_layers(sampler_cfg) else "scan"


def device_info() -> dict:
  d = jax.devices()[0]
  out = {"platform": d.platform, "device_kind": d.device_kind, "devices": jax.device_count()}
  malloc = {k: v for k, v in os.environ.items() if k.startswith("MALLOC_") or k == "GLIBC_TUNABLES"}
  if malloc:  # glibc malloc settings (and huge pages) change CPU step times by 15-25%: say so
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
                      mean_prefix: float, dtype: str, iters: int, unroll: bool = False) -> dict:
  """The measured decode step against its lower bound (decode_step_bound).

  rollout_at(T) returns a blocking callable that samples thoughts of exactly T tokens; the decode
  step is the marginal time per token between T and T // 2 (the prefill cancels), so the bound
  uses the mean cache fill of those steps: the prefixes (shared ones counted once) plus 3T/4 per
  stream. unroll: the decode loop runs its layers unrolled over per-layer weights (decode_layers),
  and so does the timed matmul floor (decode_matmuls_fn)."""
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
  bound = decode_step_bound(model.config, streams=streams,
                            kv_tokens=prefix_kv_tokens + streams * filled,
                            attended=mean_prefix + filled, weight_bytes=weight_bytes,
                            kv_value_bytes=jnp.dtype(dtype).itemsize,
                            flops_rate=metrics.measured_peak_flops(dtype),
                            bandwidth=measured_bandwidth())
  matmuls = decode_matmuls_seconds(model.config, streams, dtype, iters, unroll=unroll)
  return {"decode_step_seconds": step, "decode_streams": streams, **bound,
          "decode_over_bound": step / bound["bound_seconds"],
          "decode_matmuls_seconds": matmuls,
          "decode_matmuls_over_bound": matmuls / bound["bound_seconds"],
          "decode_over_matmuls": step / matmuls}


def decode_matmuls_fn(cfg, streams: int, dtype: str, unroll: bool = False):
  """(jitted fn, args): the decode step's weight matmuls alone, `streams` rows through every
  layer's projections and the LM head, with the layers in the form the decode loop runs them:
  float32 weights stacked over the layers and cast to the compute dtype in a layer scan, or
  (unroll) one set of weights per layer, already cast, in an unrolled loop. The form matters on
  CPU: the scan copies each layer's weights out of the stacked arrays (SmolLM2 at 16 rows, one
  process: 35.7 ms scanned against 28.7 ms unrolled). See decode_matmuls_seconds."""
  import jax.numpy as jnp
  d, f, hd = cfg.d_model, cfg.d_ff, cfg.head_dim
  shapes = {"q": (d, cfg.n_heads * hd), "k": (d, cfg.n_kv_heads * hd),
            "v": (d, cfg.n_kv_heads * hd), "o": (cfg.n_heads * hd, d), "gate": (d, f),
            "up": (d, f), "down": (f, d)}
  keys = jax.random.split(jax.random.key(0), len(shapes) + 2)
  w = {n: jax.random.normal(k, (cfg.n_layers, *sh), jnp.float32) * 0.02
       for k, (n, sh) in zip(keys, shapes.items())}
  head = jax.random.normal(keys[-2], (cfg.vocab_size, d), jnp.float32) * 0.02
  x = jax.random.normal(keys[-1], (streams, d), dtype)

  def layer(h, wl):
    wl = {n: a.astype(dtype) for n, a in wl.items()}
    q, k, v = h @ wl["q"], h @ wl["k"], h @ wl["v"]
    mixed = (q @ wl["o"] + k.mean(-1, keepdims=True) + v.mean(-1, keepdims=True)) * 0.5
    mlp = (jax.nn.silu(h @ wl["gate"]) * (h @ wl["up"])) @ wl["down"]
    return h + mixed + mlp, None

  if unroll:  # as models.Transformer.layer_weights: per-layer arrays, cast once, outside
    from models.transformer import per_layer
    w = jax.block_until_ready(per_layer({n: a.astype(dtype) for n, a in w.items()}))

  @jax.jit
  def step(x, w, head):
    if unroll:
      for wl in w:
        x = layer(x, wl)[0]
    else:
      x, _ = jax.lax.scan(layer, x, w)
    return x @ head.astype(dtype).T

  return step, (x, w, head)


def decode_matmuls_seconds(cfg, streams: int, dtype: str, iters: int,
                           unroll: bool = False) -> float:
  """The decode step's weight matmuls alone (decode_matmuls_fn), timed on this device: what a
  step would cost if attention, norms, cache writes and sampling were free. At a few rows a
  matmul streams its weights well below the memory bandwidth and computes well below the
  square-matmul rate, so this is the part of decode_over_bound the device's matmul kernels set,
  and decode_over_matmuls the part the rest of the step adds."""
  step, args = decode_matmuls_fn(cfg, streams, dtype, unroll)
  run = lambda: jax.block_until_ready(step(*args))  # noqa: E731
  run()
  return alternate({"m": run}, rounds=max(iters, 5))["m"]
