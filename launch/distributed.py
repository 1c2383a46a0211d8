"""jax.distributed set-up: automatic on TPU pods and SLURM, explicit with coordinator flags."""

from __future__ import annotations

import os


def flags_problem(coordinator: str | None, num_processes: int | None,
                  process_id: int | None) -> str | None:
  """What is wrong with the explicit multi-process flags, or None."""
  if coordinator is None:
    if num_processes is not None or process_id is not None:
      return ("--num_processes and --process_id go with --coordinator=HOST:PORT (process 0's "
              "address); without it SLURM and TPU pods are detected automatically")
    return None
  host, _, port = coordinator.rpartition(":")
  if not host or not port.isdigit():
    return f"--coordinator={coordinator!r} must be HOST:PORT, e.g. 10.0.0.1:1234"
  if num_processes is None or process_id is None:
    return "--coordinator needs --num_processes=N and --process_id=I (0 <= I < N)"
  if num_processes < 1 or not 0 <= process_id < num_processes:
    return (f"--process_id={process_id} --num_processes={num_processes}: need N >= 1 and "
            "0 <= I < N")
  return None


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
    problem = flags_problem(coordinator, num_processes, process_id)
    if problem:
      raise ValueError(problem)
    kw = dict(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id)
  # Peers that die are detected by the coordination service's heartbeat: survivors exit with an
  # error instead of hanging (see tests/launch/test_multiprocess.py).
  kw["heartbeat_timeout_seconds"] = int(os.environ.get("RLP_HEARTBEAT_TIMEOUT", "20"))
  if os.environ.get("JAX_PLATFORMS", "") == "cpu":
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(**kw)
  return True
