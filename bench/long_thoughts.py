"""Rollout speed against thought length at a fixed number of streams: does a decode step's cost
follow the filled part of the thought cache or the whole buffer?

  python -m bench.long_thoughts [--lengths=64,512,2048] [--group=4] [--repeats=2]
                                [--whole_buffer_too]

One document (512 tokens), one position, G streams, every thought forced to run to its limit
(min_thought_len = max_thought_len), SmolLM2 float32; after a first rollout that compiles, the
best of --repeats rollouts is timed (one alone can be slowed by the machine: on a shared 2-core
CPU, single timings of the same rollout ranged 2.6-5.0 s). Prints one JSON line per length:
seconds, thought tokens, tok/s and ms per decode step, and the read spans
(SamplerConfig.read_spans). --whole_buffer_too repeats the longest length with attend_block=0
(every step reads the whole buffer), the comparison.
"""

from __future__ import annotations

import json
import time

import numpy as np
from absl import app, flags

flags.DEFINE_list("lengths", ["64", "512", "2048"], "thought lengths (max_thought_len)")
flags.DEFINE_integer("group", 4, "streams (thoughts) at the one position")
flags.DEFINE_integer("repeats", 2, "timed rollouts per length after the compiling one (the best "
                     "is reported)", lower_bound=1)
flags.DEFINE_bool("whole_buffer_too", False, "also time the longest length reading the whole "
                  "buffer at every step (attend_block=0)")
FLAGS = flags.FLAGS


def run(lengths, group: int = 4, whole_buffer_too: bool = False, model=None,
        repeats: int = 2) -> list[dict]:
  """The rows; `model` defaults to SmolLM2 (the GGUF)."""
  import jax
  import jax.numpy as jnp
  import models
  from rlp import sampler
  if model is None:
    model = models.load_gguf(models.smollm2_path())
  rng = np.random.default_rng(0)
  vocab = min(20000, model.config.vocab_size)
  docs = jnp.asarray(rng.integers(0, vocab, (1, 512)), jnp.int32)
  cuts = jnp.asarray([[400]], jnp.int32)
  cases = [(t, 128) for t in lengths] + ([(max(lengths), 0)] if whole_buffer_too else [])
  out = []
  for t, block in cases:
    cfg = sampler.SamplerConfig(group_size=group, max_thought_len=t, min_thought_len=t,
                                temperature=1.0, prompt_ids=(1, 2, 3), close_ids=(4, 5, 6),
                                attend_block=block)
    dt = float("inf")
    for seed in range(1 + repeats):  # the first call compiles
      t0 = time.perf_counter()
      ro = sampler.rollout(model, docs, cuts, jax.random.key(seed), cfg)
      jax.block_until_ready(ro.tokens)
      if seed:
        dt = min(dt, time.perf_counter() - t0)
    tokens = int(np.asarray(ro.valid).sum())
    steps = len(cfg.prompt_ids) + cfg.buffer_len
    out.append({"bench": "long_thoughts", "thought": t, "streams": group, "attend_block": block,
                "read_spans": list(cfg.read_spans()), "seconds": dt, "thought_tokens": tokens,
                "tokens_per_sec": tokens / dt, "ms_per_decode_step": 1e3 * dt / steps})
  return out


def main(_):
  for row in run([int(x) for x in FLAGS.lengths], FLAGS.group, FLAGS.whole_buffer_too,
                 repeats=FLAGS.repeats):
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
  app.run(main)
