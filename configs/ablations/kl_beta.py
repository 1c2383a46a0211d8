"""Ablation over rlp.kl_beta on SmolLM2-135M (CPU-sized, from configs/smollm2_rlp.py).

  python launch/sweep.py configs/ablations/kl_beta.py --workdir=workdirs/ablations/kl_beta
  python launch/sweep.py configs/ablations/kl_beta.py --dry-run      # print the commands

Paper: 1e-4/1e-3/0 give 41.35/41.44/42.17 (paper).
"""

from configs import smollm2_rlp


def get_config():
  return smollm2_rlp.get_config()


def get_sweep():
  return [{"rlp.kl_beta": v} for v in (0.0, 1e-4, 1e-3)]
