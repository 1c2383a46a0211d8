"""The RLP data pipeline's throughput (tokenize + select positions + batch), 0 and 2 workers."""

from __future__ import annotations

import time

import grain
import numpy as np

import models
from bench import common
from rlp import batches
from rlp import corpora
from models.tokenizer import load_tokenizer


def _pipeline(texts, tok, workers, seq_len=256, batch=4):
  # tokenization happens inside the pipeline here (a lazy text source), as it would for TFDS
  docs = grain.MapDataset.source(texts).map(lambda t: np.asarray(tok.encode(t), np.int32))
  ds = batches.rlp_dataset(docs, seq_len=seq_len, batch_size=batch, positions_per_doc=4, min_prefix=8,
                        pad_id=0, seed=0)
  return batches.make_iterator(ds, workers)


def run(num_docs=2000, batches=200):
  tok = load_tokenizer(models.smollm2_path())
  texts = corpora.reasoning_documents("train", num_docs)
  out = {"bench": "data", "docs": num_docs, **common.device_info()}
  for workers in (0, 2):
    it = _pipeline(texts, tok, workers)
    next(it)  # start-up (worker processes) is not throughput
    t = time.perf_counter()
    n = 0
    for _ in range(batches):
      b = next(it)
      n += int(b.lengths.sum())
    dt = time.perf_counter() - t
    del it
    out[f"tokens_per_sec_workers{workers}"] = n / dt
    out[f"batches_per_sec_workers{workers}"] = batches / dt
  return out
