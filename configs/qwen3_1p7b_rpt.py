"""RPT twin of configs/qwen3_1p7b_rlp.py (arXiv 2506.08007 settings: G 8, temperature 0.8,
GRPO std-scaled advantages, lr 1e-6, KL 0).

  rlp-train --config=configs/qwen3_1p7b_rpt.py --config.model.path=/ckpt/Qwen3-1.7B-Base --workdir=/runs/qwen3_rpt

Expected (paper): RLP beats RPT token-matched (41.69 vs 43.35 Overall).
"""

from configs import qwen3_1p7b_rlp


def get_config():
  c = qwen3_1p7b_rlp.get_config()
  c.objective = "rpt"
  c.rlp.group_size = 8
  c.rlp.temperature = 0.8
  c.rlp.adv_scale = "std"
  c.data.selection = "entropy"  # RPT filters positions by entropy
  return c
