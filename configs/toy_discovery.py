"""RL that teaches: on the testbed of configs/toy_reasoning.py, a warm-up that rarely writes the
whole computation, then RLP, which makes the model carry its thought through.

  rlp-train --config=configs/toy_discovery.py --workdir=workdirs/discovery
  python -m bench.testbed --config=toy_discovery --out=workdirs/discovery_bench   # + controls, seeds

The warm-up (inside the run) trains on documents in which half of the problems are worked inside
the thought markers, but five worked problems in six stop after two of the four operand / sum
pairs ('3+7+1+5=<think>3370</think>6': the answer is still two additions away) and only one in
six writes the whole computation ('=<think>33701156</think>6'). The warmed-up model writes the
short thought most of the time, so its thoughts rarely say the answer (accuracy with a thought
about 20%, without about 12%). RLP
then runs on plain documents at the answer positions with the paper's objective (no scorer
term): the whole-computation thoughts earn a reward about 2 nats higher, and the policy learns to
write them.

Controls at matched steps from the same warm-up (each the command above with one override):
  --config.rlp.shuffle_rewards=True                          placebo RL (rewards permuted)
  --config.objective=cpt --config.data.source=toy:train:0.5:2-2-2-2-2-4   the warm-up continued
  --config.objective=cpt                                     CPT on the plain documents

Expected (3 seeds, docs/recipe.md): after the warm-up about 20% accuracy with a thought, gain over
the empty-thought placebo about +0.2 nats; after 150 RLP steps about 99% and about +2.2 nats;
the three controls stay near their start. About 4 min of warm-up and 2 min of RLP on 2 CPU cores.
"""

from configs import toy_reasoning

# worked problems: the first two steps, five times in six; the whole computation once in six
WARMUP_SOURCE = "toy:train:0.5:2-2-2-2-2-4"


def get_config():
  c = toy_reasoning.get_config()
  c.warmup.steps = 1200
  c.warmup.source = WARMUP_SOURCE
  c.train.steps = 150
  c.train.eval_every = 25
  return c
