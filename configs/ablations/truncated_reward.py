"""Reward shaping of truncated thoughts on the testbed (configs/toy_reasoning.py: 600 warm-up
steps, then 150 RLP steps; a thought that reaches rlp.max_thought_len = 12 tokens without its
closer is truncated).

  python launch/sweep.py configs/ablations/truncated_reward.py --workdir=workdirs/ablations/trunc
  rlp-plot workdirs/ablations/trunc/*

Runs: keep (the paper: a truncated thought is scored like any other), zero (its reward is 0, so
it is pushed towards the group mean), -1 (a fixed penalty below most rewards).

Measured (seed 0): keep +2.17 nats, zero +2.12, -1 +2.13; pass@8 1.00 in all three. After the
warm-up fewer than 1% of the testbed's thoughts are truncated (they close at 8 tokens), so the
shaping has little to act on here; on SmolLM2, where 96-100% are truncated, it would (not yet
measured).
"""

from configs import toy_reasoning


def get_config():
  return toy_reasoning.get_config()


def get_sweep():
  return [{"name": "keep", "rlp.truncated_reward": "keep"},
          {"name": "zero", "rlp.truncated_reward": "zero"},
          {"name": "minus1", "rlp.truncated_reward": "-1"}]
