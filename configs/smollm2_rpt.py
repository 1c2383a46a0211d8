"""Baseline: RPT (think, then predict the next token; reward 1 for an exact byte-prefix match at
a token boundary; GRPO) on SmolLM2-135M, same data and thought budget as configs/smollm2_rlp.py.
The paper's RPT settings: G = 8, temperature 0.8, std-scaled advantages.

  rlp-train --config=configs/smollm2_rpt.py --workdir=workdirs/smollm2_rpt

Expected: rewards are sparse (0/1) and mostly 0 for a 135M model with 24-token thoughts.
"""

from configs import smollm2_rlp


def get_config():
  c = smollm2_rlp.get_config()
  c.objective = "rpt"
  c.rlp.group_size = 8
  c.rlp.temperature = 0.8
  c.rlp.adv_scale = "std"
  c.rlp.scorer_weight = 0.0  # RPT scores a sampled prediction, not x_t
  c.data.batch_size = 1  # matched thought tokens per step with G = 8
  return c
