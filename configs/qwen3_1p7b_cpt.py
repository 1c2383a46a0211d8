"""CPT twin of configs/qwen3_1p7b_rlp.py, token-matched: next-token loss on the same documents and
context (512 sequences of 2048 tokens a step, the RLP step's 512 documents of up to 2048 tokens,
packed), the same optimizer (AdamW, lr 1e-6 constant: the paper states no other CPT setting).

  rlp-train --config=configs/qwen3_1p7b_cpt.py --config.model.path=/ckpt/Qwen3-1.7B-Base --workdir=/runs/qwen3_cpt

Expected (paper): Overall 30.32 -> 30.85 at 1B tokens. The table against the RLP run: the
rlp-eval table command in configs/qwen3_1p7b_rlp.py.
"""

from configs import qwen3_1p7b_rlp


def get_config():
  c = qwen3_1p7b_rlp.get_config()
  c.objective = "cpt"
  c.data.batch_size = 512  # sequences of data.seq_len tokens: the RLP step's documents
  return c
