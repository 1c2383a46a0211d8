"""Run outputs: metrics.jsonl, TensorBoard events, sample thoughts; FLOPs and MFU as MaxText counts."""

from __future__ import annotations

import functools
import html
import json
import math
import os
import secrets
import time

import jax
import jax.numpy as jnp
import numpy as np

# Rated dense bf16 peaks (FLOP/s) by device kind; CPU peaks are measured, never assumed.
RATED_PEAK = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "TPU v4": 275e12,
              "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5p": 459e12, "TPU v6 lite": 918e12}


def _is_main():
  return jax.process_index() == 0


class MetricsWriter:
  """Appends one JSON object per logged step to metrics.jsonl; mirrors scalars to TensorBoard."""

  def __init__(self, workdir: str, tensorboard: bool = True, wandb: dict | None = None):
    """wandb: None (off) or wandb.init's arguments (project, entity, name, config, ...); the run's
    id is kept in WORKDIR/wandb_id so a resumed run logs into the same W&B run."""
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    self._wandb = None
    if _is_main() and tensorboard:
      from tensorboardX import SummaryWriter
      self._tb = SummaryWriter(os.path.join(workdir, "tb"))
    if _is_main() and wandb:
      self._wandb = start_wandb(workdir, **wandb)

  def rewind(self, step: int) -> int:
    """Keeps lines with step <= `step`; moves later ones (from a run killed after its last
    checkpoint) to metrics.rewound.jsonl so nothing written is lost. Returns lines moved."""
    if not _is_main() or not os.path.exists(self.path):
      return 0
    with open(self.path) as f:
      lines = f.readlines()
    keep, later = [], []
    for line in lines:
      try:
        (keep if json.loads(line).get("step", 0) <= step else later).append(line)
      except json.JSONDecodeError:  # a half-written last line of a killed run
        later.append(line if line.endswith("\n") else line + "\n")
    if later:
      with open(os.path.join(os.path.dirname(self.path), "metrics.rewound.jsonl"), "a") as f:
        f.writelines(later)
      with open(self.path, "w") as f:
        f.writelines(keep)
    return len(later)

  def write(self, step: int, scalars: dict):
    if not _is_main():
      return
    row = {"step": int(step)}
    for k, v in scalars.items():
      if isinstance(v, (list, tuple)):  # an interval [low, high]
        row[k] = [_finite(x) for x in v]
      else:
        row[k] = _finite(v)
    with open(self.path, "a") as f:
      f.write(json.dumps(row) + "\n")
    flat = {}  # scalars by name; an interval as NAME/low, NAME/high
    for k, v in row.items():
      if isinstance(v, list):
        flat.update({f"{k}/{n}": x for n, x in zip(("low", "high"), v) if x is not None})
      elif k != "step" and v is not None:
        flat[k] = v
    if self._tb is not None:
      for k, v in flat.items():
        self._tb.add_scalar(k, v, step)
    if self._wandb is not None:
      self._wandb.log(flat, step=int(step))

  def text(self, step: int, tag: str, text: str):
    if self._tb is not None:
      self._tb.add_text(tag, text, step)
    if self._wandb is not None:
      import wandb
      self._wandb.log({tag: wandb.Html(f"<pre>{html.escape(text)}</pre>")}, step=int(step))

  def close(self):
    if self._tb is not None:
      self._tb.close()
    if self._wandb is not None:
      self._wandb.finish()
      self._wandb = None


def start_wandb(workdir: str, project: str, entity: str = "", name: str = "", config=None,
                resume_id: bool = True):
  """wandb.init for a run in `workdir` (W&B files in WORKDIR/wandb). Off-line logging: set
  WANDB_MODE=offline (then `wandb sync WORKDIR/wandb/offline-run-*`). With resume_id the W&B run id
  is kept in WORKDIR/wandb_id, so the resumed training run continues the same W&B run."""
  try:
    import wandb
  except ImportError:
    raise ImportError("W&B logging is configured (train.wandb_project / --wandb_project) but "
                      "wandb is not installed: pip install -e '.[wandb]', or leave the project "
                      "empty") from None
  run_id = None
  id_file = os.path.join(workdir, "wandb_id")
  if resume_id:
    if os.path.exists(id_file):
      with open(id_file) as f:
        run_id = f.read().strip() or None
    if run_id is None:
      run_id = secrets.token_hex(4)  # W&B ids: lowercase letters and digits
      os.makedirs(workdir, exist_ok=True)
      with open(id_file, "w") as f:
        f.write(run_id)
  run = wandb.init(project=project, entity=entity or None, name=name or None, config=config,
                   dir=workdir, id=run_id, resume="allow" if run_id else None)
  return run


def host_rss_peak_gib() -> float:
  """This process's peak resident memory so far (GiB; getrusage's high-water mark)."""
  import resource
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB on Linux


def _finite(v):
  v = float(v)
  return v if math.isfinite(v) else None


def read_metrics(workdir: str) -> list[dict]:
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def _peak_operands(n: int, dtype: str, key: int, devices):
  """[D, n, n] random operands, one n x n slice on each of the D devices."""
  from jax.sharding import Mesh, NamedSharding, PartitionSpec
  mesh = Mesh(np.array(devices), ("d",))
  with jax.set_mesh(mesh):  # its own mesh, whatever mesh the caller has set
    make = jax.jit(lambda k: jax.random.normal(k, (len(devices), n, n), dtype),
                   out_shardings=NamedSharding(mesh, PartitionSpec("d")))
    return make(jax.random.key(key)), make(jax.random.key(key + 1))


def _local(devices) -> tuple:
  """This process's share of `devices` (default: all its devices), in a hashable form."""
  devices = jax.local_devices() if devices is None else list(devices)
  return tuple(d for d in devices if d.process_index == jax.process_index())


def measured_peak_flops(dtype: str = "float32", sizes=None, repeats: int = 5,
                        devices=None) -> float:
  """Best jitted matmul rate of `devices` together (default: this process's devices; the CPU MFU
  denominator).

  Every device multiplies its own n x n pair at the same time, as a training step on a mesh over
  them does: CPU devices split with --xla_force_host_platform_device_count share the host's
  cores, and one of them alone can measure less than the host delivers to all of them (an MFU
  above 1 came from that denominator). Random operands (zeros or ones can run faster than real
  data). On an accelerator `repeats` products are queued back to back and timed together,
  amortising the launch latency; on the CPU each product is timed alone."""
  return _measured_peak(dtype, sizes, repeats, _local(devices))


@functools.lru_cache(maxsize=None)
def _measured_peak(dtype, sizes, repeats, devices) -> float:
  accel = devices[0].platform != "cpu"
  n_dev = len(devices)
  if sizes is None and accel:
    sizes = (2048, 4096, 8192)
  elif sizes is None:  # CPU devices share the host: no more work per size than one 2048^3 product
    sizes = tuple(n for n in (512, 1024, 2048) if n_dev * n ** 3 <= 2048 ** 3) or (512,)
  best = 0.0
  mesh = jax.sharding.Mesh(np.array(devices), ("d",))
  with jax.set_mesh(mesh):
    f = jax.jit(lambda x, y: jnp.einsum("bij,bjk->bik", x, y))
    for n in sizes:
      a, b = _peak_operands(n, dtype, n, devices)
      f(a, b).block_until_ready()
      queued = repeats if accel else 1
      for _ in range(3 if accel else repeats):
        t = time.perf_counter()
        jax.block_until_ready([f(a, b) for _ in range(queued)])
        best = max(best, queued * n_dev * 2 * n ** 3 / (time.perf_counter() - t))
  return best


def device_peak_flops(dtype: str = "float32", devices=None) -> tuple[float, str]:
  """(peak FLOP/s of the devices a step runs on, how it was obtained): rated for known
  accelerators, measured otherwise (this process's share of `devices` together, times the
  processes). devices: the mesh's devices (default: all of the job's)."""
  local = _local(devices)
  n_global = len(local) * jax.process_count()
  dev = local[0]
  if dev.platform != "cpu":
    kind = dev.device_kind
    for name, peak in RATED_PEAK.items():
      if name.lower() in kind.lower():
        scale = 0.5 if dtype == "float32" and dev.platform == "gpu" else 1.0
        return peak * scale * n_global, f"rated ({kind}) x {n_global}"
  return measured_peak_flops(dtype, devices=local) * jax.process_count(), (
      f"measured matmul, {len(local)} {dev.platform} device(s) at once")


def rlp_step_flops(cfg, *, batch: int, seq_len: int, positions: int, group: int,
                   prompt_len: int, thought_len: float, updates: int, ema_forward: bool) -> float:
  """Matmul FLOPs of one RLP step: prefill + decode rollout, EMA scoring, and the updates'
  forward + backward over [prefix, thought] (prefix recomputed per update)."""
  n = cfg.num_params(include_embedding=False) + cfg.vocab_size * cfg.d_model
  streams = batch * positions * group
  t = prompt_len + thought_len
  attn_tok = 4 * cfg.n_layers * cfg.n_heads * cfg.head_dim  # per (query, key) pair, QK and AV
  prefill = batch * (2 * n * seq_len + attn_tok * seq_len * seq_len / 2)
  decode = streams * (2 * n * t + attn_tok * t * (seq_len / 2 + t / 2))
  ema = prefill if ema_forward else 0.0
  update = 3 * (prefill + decode) * updates
  return prefill + decode + ema + update


def cpt_step_flops(cfg, batch: int, seq_len: int) -> float:
  return batch * seq_len * cfg.flops_per_token(seq_len, training=True)


def to_host(metrics: dict) -> dict:
  return {k: float(np.asarray(v)) for k, v in jax.device_get(metrics).items()}
