"""Ablation over rlp.max_thought_len on SmolLM2-135M (CPU-sized, from configs/smollm2_rlp.py).

  python launch/sweep.py configs/ablations/thought_length.py --workdir=workdirs/ablations/thought_length
  python launch/sweep.py configs/ablations/thought_length.py --dry-run      # print the commands

Paper: 64/512/1024/2048/4096 tokens give 11.50/24.65/38.89/42.17/42.21 (paper).
"""

from configs import smollm2_rlp


def get_config():
  return smollm2_rlp.get_config()


def get_sweep():
  return [{"rlp.max_thought_len": v} for v in (8, 16, 32, 64)]
