"""RLP on a gradient-diverse subset vs a random subset of the same size (SmolLM2-135M, CPU-sized).

Build both subsets from one pool in one pass (the proxy's per-document gradients, rlp/diversity.py):

  rlp-data select reasoning:train --max_docs=60 --n=20 --proj_dim=64 --seq_len=256 \\
      --output=workdirs/select/gvendi --random_output=workdirs/select/random
  python launch/sweep.py configs/ablations/data_selection.py --workdir=workdirs/ablations/data_selection

then compare the runs' final `eval/information_gain` (held-out reasoning:eval documents, the run's
positions) and `rlp-plot workdirs/ablations/data_selection/*`. The subsets' directories are
SUBSETS below.

Measured (one seed; pool 60, n 20, d 64, cluster filter; 30 RLP steps each): held-out gain
selected +1.11, random +0.62, both from -0.63. The selected subset had more tokens and no higher
G-Vendi than the random one (12.79 vs 12.89), so read it as the pipeline running end to end, not
as evidence for gradient diversity (docs/diversity.md).
"""

from configs import smollm2_rlp

SUBSETS = {"gvendi": "workdirs/select/gvendi", "random": "workdirs/select/random"}


def get_config():
  c = smollm2_rlp.get_config()
  c.train.steps = 30  # the figures above were measured at 30 steps (the main job now runs 60)
  return c


def get_sweep():
  return [{"name": name, "data.source": f"arrayrecord:{path}"} for name, path in SUBSETS.items()]
