"""Ablation over data.positions_per_doc on SmolLM2-135M (CPU-sized, from configs/smollm2_rlp.py).

  python launch/sweep.py configs/ablations/positions_per_doc.py --workdir=workdirs/ablations/positions_per_doc
  python launch/sweep.py configs/ablations/positions_per_doc.py --dry-run      # print the commands

Paper: k positions per document share one prefill (no paper figure).
"""

from configs import smollm2_rlp


def get_config():
  return smollm2_rlp.get_config()


def get_sweep():
  return [{"data.positions_per_doc": v} for v in (1, 2, 4)]
