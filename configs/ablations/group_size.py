"""Ablation over rlp.group_size on SmolLM2-135M (CPU-sized, from configs/smollm2_rlp.py).

  python launch/sweep.py configs/ablations/group_size.py --workdir=workdirs/ablations/group_size
  python launch/sweep.py configs/ablations/group_size.py --dry-run      # print the commands

Paper: G = 4/8/16/32 gives 41.38/41.95/42.17/41.75 Overall (paper).
"""

from configs import smollm2_rlp


def get_config():
  return smollm2_rlp.get_config()


def get_sweep():
  return [{"rlp.group_size": v} for v in (2, 4, 8, 16)]
