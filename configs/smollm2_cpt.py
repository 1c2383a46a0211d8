"""Baseline: continued pretraining (next-token loss) of SmolLM2-135M on the same reasoning
documents as configs/smollm2_rlp.py, from the same start (the shipped model; a format warm-up
too when warmup.steps is set) and at matched steps (2 x 128 document tokens per step): the same
as --config.objective=cpt.

  rlp-train --config=configs/smollm2_cpt.py --workdir=workdirs/smollm2_cpt
  rlp-plot workdirs/smollm2_rlp workdirs/smollm2_cpt --out=rlp_vs_cpt.png

Expected: ~1-2 s/step on a 2-core CPU; cpt/nll falls slowly (SmolLM2 already models this text
well); its held-out information gain (measured at the same position selection as the RLP run,
the hardest tokens) is in docs/recipe.md next to RLP's (on 32 held-out reasoning documents after
60 steps: CPT -2.50, RLP +0.83 and +1.26 over two seeds).
"""

from configs import smollm2_rlp


def get_config():
  c = smollm2_rlp.get_config()
  c.objective = "cpt"
  return c
