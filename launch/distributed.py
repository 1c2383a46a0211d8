"""jax.distributed set-up: automatic on TPU pods and SLURM, explicit with coordinator flags."""

from __future__ import annotations

import os


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> bool:
  """Calls jax.distributed.initialize when the run has more than one process; returns whether it did."""
  import jax
  explicit = coordinator is not None
  slurm = int(os.environ.get("SLURM_NTASKS", "1")) > 1
  tpu_pod = bool(os.environ.get("TPU_WORKER_HOSTNAMES", "").count(","))
  if not (explicit or slurm or tpu_pod):
    return False
  kw = {}
  if explicit:
    if num_processes is None or process_id is None:
      raise ValueError("--coordinator needs --num_processes and --process_id")
    kw = dict(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id)
  # Peers that die are detected by the coordination service's heartbeat: survivors exit with an
  # error instead of hanging (see tests/launch/test_multiprocess.py).
  kw["heartbeat_timeout_seconds"] = int(os.environ.get("RLP_HEARTBEAT_TIMEOUT", "20"))
  if os.environ.get("JAX_PLATFORMS", "") == "cpu":
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(**kw)
  return True
