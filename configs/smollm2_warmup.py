"""Thought-format warm-up before RLP: the CPT step on thought-formatted reasoning text
(question, then <think> worked steps </think>, then the answer), so a model that never writes
<think> on its own learns the format (the failure a public small-scale replication reported).

  rlp-train --config=configs/smollm2_warmup.py --workdir=workdirs/warmup
  rlp-train --config=configs/smollm2_rlp.py --config.model.init=checkpoint \\
      --config.model.path=workdirs/warmup --workdir=workdirs/rlp_after_warmup

Expected: cpt/nll falls from ~1.3 to below 1.0 within 40 steps on a 2-core CPU (~1-2 s/step).
"""

from configs import smollm2_rlp


def get_config():
  c = smollm2_rlp.get_config()
  c.objective = "cpt"
  c.data.source = "reasoning_thought:train"
  c.data.eval_source = "reasoning_thought:eval"
  c.optim.lr = 2e-5
  return c
