"""Baseline: continued pretraining (next-token loss) of SmolLM2-135M on the same reasoning
documents as configs/smollm2_rlp.py, at matched input tokens (2 x 128 document tokens per step).

  rlp-train --config=configs/smollm2_cpt.py --workdir=workdirs/smollm2_cpt
  rlp-plot workdirs/smollm2_rlp workdirs/smollm2_cpt --out=rlp_vs_cpt.png

Expected: ~1-2 s/step on a 2-core CPU; cpt/nll falls slowly from ~1.0 (SmolLM2 already models
this text well).
"""

from configs import smollm2_rlp


def get_config():
  c = smollm2_rlp.get_config()
  c.objective = "cpt"
  return c
