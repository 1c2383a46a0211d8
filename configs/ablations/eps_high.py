"""Ablation over rlp.eps_high on SmolLM2-135M (CPU-sized, from configs/smollm2_rlp.py).

  python launch/sweep.py configs/ablations/eps_high.py --workdir=workdirs/ablations/eps_high
  python launch/sweep.py configs/ablations/eps_high.py --dry-run      # print the commands

Paper: clip-higher against thought-length collapse (no paper figure).
"""

from configs import smollm2_rlp


def get_config():
  return smollm2_rlp.get_config()


def get_sweep():
  return [{"rlp.eps_high": v} for v in (0.2, 0.28, 0.4)]
