"""CPT twin of configs/qwen3_1p7b_rlp.py: next-token loss on the same documents and context.

  rlp-train --config=configs/qwen3_1p7b_cpt.py --config.model.path=/ckpt/Qwen3-1.7B-Base --workdir=/runs/qwen3_cpt

Expected (paper): Overall 30.32 -> 30.85 at 1B tokens.
"""

from configs import qwen3_1p7b_rlp


def get_config():
  c = qwen3_1p7b_rlp.get_config()
  c.objective = "cpt"
  c.data.batch_size = 512
  return c
