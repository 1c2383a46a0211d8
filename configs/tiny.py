"""A tiny random model on the reasoning corpus (byte tokenizer): for tests, CI and quick checks.

  rlp-train --config=configs/tiny.py --workdir=/tmp/tiny
  rlp-train --config=configs/tiny.py --config.objective=cpt --workdir=/tmp/tiny_cpt

Expected: 10 steps in well under a minute on a 2-core CPU, a checkpoint every 5 steps;
interrupt it (Ctrl-C or kill) and run the same command again to resume. The curves move little
(a random model): this config checks the machinery, not the method.
"""

from configs import base


def get_config():
  c = base.get_config()
  c.data.tokenizer = "bytes"
  c.data.num_docs = 64
  c.data.seq_len = 96
  c.data.batch_size = 8  # divisible by up to 8 data-parallel devices
  c.data.min_prefix = 16
  c.data.positions_per_doc = 2
  c.rlp.group_size = 4
  c.rlp.max_thought_len = 8
  c.rlp.temperature = 1.0
  c.optim.lr = 1e-3
  c.train.steps = 10
  c.train.checkpoint_every = 5
  c.train.eval_docs = 4
  return c
