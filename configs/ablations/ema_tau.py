"""Ablation over rlp.ema_tau on SmolLM2-135M (CPU-sized, from configs/smollm2_rlp.py).

  python launch/sweep.py configs/ablations/ema_tau.py --workdir=workdirs/ablations/ema_tau
  python launch/sweep.py configs/ablations/ema_tau.py --dry-run      # print the commands

Paper: 0.99/0.995/0.999/0.9995 give 38.82/39.21/39.54/39.20 (paper).
"""

from configs import smollm2_rlp


def get_config():
  return smollm2_rlp.get_config()


def get_sweep():
  return [{"rlp.ema_tau": v} for v in (0.99, 0.995, 0.999, 0.9995)]
