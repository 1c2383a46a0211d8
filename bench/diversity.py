"""G-Vendi figures on SmolLM2 (docs/diversity.md): seconds per document at several projection
dimensions, for the count sketch (the default) and optionally the dense Rademacher projection
(whose cost is linear in d: random signs for d x P entries per batch), the ratio of the largest
to the smallest d, and the G-Vendi of selected subsets against random subsets of the same size.

  python -m bench.diversity [--docs=8] [--pool=64] [--n=16] [--dims=16,1024]
                            [--projections=sketch,dense] [--select_dim=1024]

Prints one JSON line per figure. Documents: reasoning:train (gsm_symbolic) and Shakespeare lines,
truncated to --seq_len tokens.
"""

from __future__ import annotations

import json
import time

import numpy as np
from absl import app, flags

flags.DEFINE_integer("docs", 8, "documents per timing")
flags.DEFINE_integer("seq_len", 256, "tokens per document")
flags.DEFINE_list("dims", ["16", "1024"], "projection dimensions to time")
flags.DEFINE_list("projections", ["sketch"], "sketch and / or dense")
flags.DEFINE_integer("pool", 64, "documents in the selection pool (0: timings only)")
flags.DEFINE_integer("n", 16, "documents to select")
flags.DEFINE_integer("select_dim", 1024, "projection dimension for the selection figures")
flags.DEFINE_integer("draws", 5, "random subsets to compare with")
FLAGS = flags.FLAGS


def _pool(tok, n):
  from rlp import corpora
  texts = corpora.reasoning_documents("train", n // 2)
  texts += corpora.shakespeare_documents(max_chars=1500)[:n - len(texts)]
  return [np.asarray(tok.encode(t), np.int32) for t in texts]


def run(docs=8, seq_len=256, dims=(16, 1024), pool=64, n=16, select_dim=1024, draws=5,
        projections=("sketch",)):
  import models
  from rlp import diversity, metrics
  model, tok = models.load_gguf(models.smollm2_path(), with_tokenizer=True)
  out = []
  texts = _pool(tok, max(pool, docs))
  for proj in projections:
    timed = []
    for d in dims:
      kw = dict(seq_len=seq_len, proj_dim=d, batch_size=4, projection=proj)
      diversity.measure(model, texts[:4], **kw)  # compile
      t0 = time.perf_counter()
      got = diversity.measure(model, texts[:docs], **kw)
      sec = (time.perf_counter() - t0) / docs
      timed.append(sec)
      out.append({"figure": "seconds_per_doc", "projection": proj, "proj_dim": d,
                  "seq_len": seq_len, "docs": docs, "seconds_per_doc": sec,
                  "seconds_per_1000_docs": 1000 * sec, "g_vendi": got.g_vendi,
                  "host_rss_peak_gib": metrics.host_rss_peak_gib()})
      print(json.dumps(out[-1]), flush=True)
    if len(dims) >= 2:
      out.append({"figure": "cost_ratio", "projection": proj,
                  "dims": [max(dims), min(dims)],
                  "seconds_ratio": timed[dims.index(max(dims))] / timed[dims.index(min(dims))]})
      print(json.dumps(out[-1]), flush=True)
  if not pool:  # --pool=0: timings only
    return out
  got = diversity.measure(model, texts[:pool], seq_len=seq_len, proj_dim=select_dim, batch_size=4)
  rng = np.random.default_rng(0)
  rand = [diversity.g_vendi(got.z[rng.choice(pool, n, replace=False)]) for _ in range(draws)]
  for method in ("cluster", "greedy"):
    idx = diversity.select(got.z, n, by=method)
    out.append({"figure": "selection", "method": method, "pool": pool, "n": n,
                "proj_dim": select_dim, "g_vendi_selected": diversity.g_vendi(got.z[idx]),
                "g_vendi_random_mean": float(np.mean(rand)),
                "g_vendi_random_std": float(np.std(rand)), "g_vendi_pool": got.g_vendi,
                "selected_reasoning_share": float(np.mean(idx < pool // 2))})
    print(json.dumps(out[-1]), flush=True)
  return out


def main(argv):
  del argv
  run(FLAGS.docs, FLAGS.seq_len, [int(d) for d in FLAGS.dims], FLAGS.pool, FLAGS.n,
      FLAGS.select_dim, FLAGS.draws, tuple(FLAGS.projections))


if __name__ == "__main__":
  app.run(main)
