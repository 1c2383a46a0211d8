"""The testbed where thinking must help: chained digit sums mod 10, a small model from scratch.

  rlp-train --config=configs/toy_reasoning.py --workdir=workdirs/toy_rlp
  rlp-train --config=configs/toy_reasoning.py --config.objective=cpt --workdir=workdirs/toy_cpt

Documents hold 4 problems like '3+7+1+5=6'; the answer needs three dependent additions, which the
model does not learn to do in one forward pass within this budget, while each single step is easy.
The run first trains `warmup.steps` next-token steps on documents in which half of the problems
write the worked steps inside the thought markers before the answer ('=<think>33701156</think>6':
each operand, then the running sum), then RLP on plain documents, with the target positions on
the answers (data.selection=marker after '='). The CPT command is the baseline at matched steps: the same warm-up, then next-token steps on
the same plain documents.

Expected (measured over seeds 0-2, docs/recipe.md): after the warm-up the held-out information
gain at the answers is about +2.1 nats (answer accuracy 96-98% with a thought, ~10% without);
after RLP +2.15 to +2.20 (98-99% / 11-16%); CPT from the same warm-up ends at -2.4 to +1.4
(33-88% / 5-12%). About 2 min of warm-up and 2 min of RLP on 2 CPU cores. Ablations:
--config.rlp.max_thought_len (a thought needs 8 tokens to finish the sum) and
--config.rlp.group_size; `python -m bench.testbed --ablations` runs them over seeds.
"""

from configs import base


def get_config():
  c = base.get_config()
  c.seed = 0
  c.data.tokenizer = "bytes"
  c.data.source = "toy:train"
  c.data.eval_source = "toy:eval"
  c.data.seq_len = 128
  c.data.batch_size = 16
  c.data.selection = "marker"
  c.data.position_marker = "="
  c.data.positions_per_doc = 2
  c.data.min_prefix = 8
  c.model.vocab_size = 260
  c.model.d_model = 128
  c.model.n_layers = 2
  c.model.n_heads = 4
  c.model.n_kv_heads = 2
  c.model.head_dim = 32
  c.model.d_ff = 384
  c.warmup.steps = 600
  c.warmup.source = "toy:train:0.5"
  c.warmup.lr = 1e-3
  c.rlp.group_size = 4
  c.rlp.max_thought_len = 12
  c.rlp.temperature = 1.0
  c.optim.lr = 1e-4
  c.train.steps = 150
  c.train.checkpoint_every = 100
  c.train.eval_every = 50
  c.train.eval_docs = 32
  c.train.eval_positions = 2
  c.train.eval_reasoning_every = 50  # pass@1 vs pass@k of the answers over the whole run
  c.train.eval_reasoning_samples = 8
  c.train.eval_reasoning_ks = (1, 2, 4, 8)
  c.train.sample_every = 50
  return c
