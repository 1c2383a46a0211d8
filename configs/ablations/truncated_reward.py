"""Reward shaping of truncated thoughts on the testbed (configs/toy_reasoning.py: 600 warm-up
steps, then 150 RLP steps; a thought that reaches rlp.max_thought_len = 12 tokens without its
closer is truncated).

  python launch/sweep.py configs/ablations/truncated_reward.py --workdir=workdirs/ablations/trunc
  rlp-plot workdirs/ablations/trunc/*

Runs: keep (the paper: a truncated thought is scored like any other), zero (its reward is 0, so
it is pushed towards the group mean), -1 (a fixed penalty below most rewards). Measured:
docs/long_runs.md (one seed, final held-out gain, truncated fraction, pass@1 / pass@8).
"""

from configs import toy_reasoning


def get_config():
  return toy_reasoning.get_config()


def get_sweep():
  return [{"name": "keep", "rlp.truncated_reward": "keep"},
          {"name": "zero", "rlp.truncated_reward": "zero"},
          {"name": "minus1", "rlp.truncated_reward": "-1"}]
