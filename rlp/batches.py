"""Batches: the typed batches the train steps take, and the grain pipelines that make them from
token documents (rlp/data.py): RLP / RPT batches of documents with their target positions
(`DocBatch`), CPT batches of packed sequences (`LMBatch`)."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import grain
import numpy as np
from flax import struct

from rlp.data import DataError

Array = Any  # a numpy array on the host, a jax.Array once placed


def _from_mapping(cls, batch):
  """cls built from a mapping with its field names (a batch as a user's own code may give it;
  the fields with a default may be left out), or batch itself when it is already a cls."""
  if isinstance(batch, cls):
    return batch
  if not isinstance(batch, Mapping):
    raise TypeError(f"a {cls.__name__} or a mapping with its fields, not {type(batch).__name__}")
  fields = dataclasses.fields(cls)
  names = [f.name for f in fields]
  missing = [f.name for f in fields if f.name not in batch and f.default is dataclasses.MISSING]
  extra = sorted(set(batch) - set(names))
  if missing or extra:
    raise ValueError(f"a {cls.__name__} has the fields {names}; this batch "
                     + (f"lacks {missing}" if missing else "")
                     + (" and " if missing and extra else "")
                     + (f"has unknown {extra}" if extra else ""))
  return cls(**{n: batch.get(n) for n in names})


@struct.dataclass
class DocBatch:
  """What an RLP / RPT step reads: B documents, padded to S tokens, and K target positions each.
  `cuts` are the positions t where a document is cut and a thought inserted before x_t (not to be
  confused with an LMBatch's `positions`, the RoPE position ids)."""
  tokens: Array  # [B, S] int32 token ids, padded after each document's length
  lengths: Array  # [B] int32 tokens of each document
  cuts: Array  # [B, K] int32 target positions t (entropy / low_logp selection: chosen in the step)

  @classmethod
  def of(cls, batch) -> "DocBatch":
    return _from_mapping(cls, batch)


@struct.dataclass
class LMBatch:
  """What a next-token step (CPT, the format warm-up) reads: [B, S] packed sequences."""
  inputs: Array  # [B, S] token ids
  targets: Array  # [B, S] the next token of each input
  loss_mask: Array  # [B, S] float: 1 where a target is learned from
  segment_ids: Array | None = None  # [B, S] packed document of each token (0: padding)
  positions: Array | None = None  # [B, S] RoPE position ids within each document

  @classmethod
  def of(cls, batch) -> "LMBatch":
    return _from_mapping(cls, batch)


# ---------------------------------------------------------------- pipelines
def _shard_and_shuffle(docs: grain.MapDataset, seed: int, process_index: int,
                       process_count: int, num_epochs: int | None) -> grain.MapDataset:
  if not 0 <= process_index < process_count:
    raise DataError(f"process_index {process_index} is outside [0, {process_count})")
  ds = docs[process_index::process_count]
  return ds.shuffle(seed=seed).repeat(num_epochs)


def choose_positions(length: int, k: int, min_prefix: int, rng: np.random.Generator,
                     candidates: np.ndarray | None = None) -> np.ndarray:
  """k target positions t in [min_prefix, length - 1] (x_t is predicted from x_<t), uniformly
  among all of them or among `candidates` (e.g. `marker_positions`); without replacement when
  there are at least k."""
  lo, hi = min_prefix, length - 1
  if hi < lo:
    raise DataError(f"document of {length} tokens is too short for min_prefix {min_prefix}")
  cand = np.arange(lo, hi + 1)
  if candidates is not None:
    cand = np.asarray(candidates)
    cand = cand[(cand >= lo) & (cand <= hi)]
    if not len(cand):
      raise DataError(f"document of {length} tokens has no candidate position >= min_prefix "
                      f"{min_prefix}")
  pick = rng.choice(cand, size=k, replace=len(cand) < k)
  return np.sort(pick).astype(np.int32)


def marker_positions(doc: np.ndarray, marker_ids: Sequence[int]) -> np.ndarray:
  """The positions t whose preceding tokens are `marker_ids` (x_t is the token after a marker)."""
  doc, m = np.asarray(doc), len(marker_ids)
  if m == 0 or len(doc) <= m:
    return np.zeros((0,), np.int64)
  win = np.lib.stride_tricks.sliding_window_view(doc[:-1], m)  # win[i] = doc[i:i+m]
  return np.nonzero((win == np.asarray(marker_ids)).all(-1))[0] + m


def rlp_dataset(docs: grain.MapDataset, *, seq_len: int, batch_size: int, positions_per_doc: int,
                min_prefix: int, pad_id: int, seed: int = 0, process_index: int = 0,
                process_count: int = 1, num_epochs: int | None = None,
                marker_ids: Sequence[int] | None = None) -> grain.IterDataset:
  """DocBatches (tokens [B, S], lengths [B], cuts [B, K]) for the RLP / RPT steps.

  marker_ids: choose the K positions among those right after this token sequence (the answer
  after '=' in the testbed, after '####' in worked solutions); documents without one are skipped.
  """
  ds = _shard_and_shuffle(docs, seed, process_index, process_count, num_epochs)

  def candidates(doc):
    if not marker_ids:
      return None
    c = marker_positions(doc, marker_ids)
    return c[c >= min_prefix]

  def usable(doc):
    doc = doc[:seq_len]
    if len(doc) < min_prefix + 1:
      return False
    c = candidates(doc)
    return c is None or len(c) > 0

  probe = min(len(docs), 1000)
  if probe and not any(usable(docs[i]) for i in range(probe)):
    why = (f"the position marker {list(marker_ids)} within the first {seq_len} tokens after "
           f"min_prefix {min_prefix}" if marker_ids else f"more than min_prefix + 1 = "
           f"{min_prefix + 1} tokens")
    raise DataError(f"none of the first {probe} documents has {why}; check data.position_marker, "
                    "data.min_prefix and data.seq_len")
  ds = ds.filter(usable)

  def example(doc, rng):
    doc = doc[:seq_len]
    pos = choose_positions(len(doc), positions_per_doc, min_prefix, rng, candidates(doc))
    tokens = np.full((seq_len,), pad_id, np.int32)
    tokens[:len(doc)] = doc
    return {"tokens": tokens, "lengths": np.int32(len(doc)), "cuts": pos}

  ds = ds.random_map(example, seed=seed + 1)
  return ds.to_iter_dataset().batch(batch_size, drop_remainder=True).map(DocBatch.of)


def cpt_dataset(docs: grain.MapDataset, *, seq_len: int, batch_size: int, seed: int = 0,
                process_index: int = 0, process_count: int = 1, num_epochs: int | None = None,
                num_packing_bins: int | None = None) -> grain.IterDataset:
  """LMBatches of packed next-token sequences (inputs, targets, loss_mask, segment_ids,
  positions), [B, S].

  Documents longer than S + 1 are cut into S + 1 pieces; pieces are first-fit packed, and
  segment ids keep attention (and the loss) inside each piece.
  """
  import grain.experimental as ge
  ds = _shard_and_shuffle(docs, seed, process_index, process_count, num_epochs)
  n = seq_len + 1

  class _Split(ge.FlatMapTransform):
    max_fan_out = 1 << 16

    def flat_map(self, doc):
      return [{"tokens": doc[i:i + n]} for i in range(0, len(doc), n) if len(doc) - i >= 2]

  it = ge.FlatMapIterDataset(ds.to_iter_dataset(), _Split())
  packed = ge.FirstFitPackIterDataset(it, length_struct={"tokens": n},
                                      num_packing_bins=num_packing_bins or batch_size,
                                      seed=seed, shuffle_bins=False)

  def to_example(x):
    t, seg, pos = x["tokens"], x["tokens_segment_ids"], x["tokens_positions"]
    same = (seg[1:] == seg[:-1]) & (seg[1:] > 0)
    return {"inputs": t[:-1], "targets": t[1:], "loss_mask": same.astype(np.float32),
            "segment_ids": seg[:-1], "positions": pos[:-1]}

  return packed.map(to_example).batch(batch_size, drop_remainder=True).map(LMBatch.of)


def pad_rows(docs, seq_len: int, batch_size: int, pad_id: int = 0):
  """(tokens [batch_size, seq_len], lengths [batch_size]) of up to batch_size documents truncated
  to seq_len; missing rows are all pad with length 1 (callers drop them)."""
  toks = np.full((batch_size, seq_len), pad_id, np.int32)
  lens = np.ones((batch_size,), np.int32)
  for j, d in enumerate(docs):
    d = np.asarray(d)[:seq_len]
    toks[j, :len(d)] = d
    lens[j] = len(d)
  return toks, lens


def make_iterator(ds: grain.IterDataset, workers: int = 0, prefetch_buffer: int = 2):
  """A checkpointable iterator; workers > 0 prefetches in grain worker processes."""
  if workers > 0:
    from absl import flags
    if not flags.FLAGS.is_parsed():  # grain workers read absl flags; parse defaults first
      flags.FLAGS(["rlp"], known_only=True)
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers,
                                                     per_worker_buffer_size=prefetch_buffer))
  return iter(ds)
