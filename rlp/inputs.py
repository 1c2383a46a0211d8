"""A training run's input pipelines: the run's batches and, with a format warm-up, the warm-up's,
behind one iterator whose state is one checkpointable value."""

from __future__ import annotations

import jax

from rlp import batches
from rlp import checkpoint
from rlp import configuration
from rlp import data
from rlp import schema
from rlp.thought_format import thought_format


def dataset(settings: schema.Run, tok, model_vocab: int, warmup: bool = False):
  """(dataset, DataStats) of the run (RLP/RPT: documents and positions; CPT: packed sequences),
  or with warmup=True the format warm-up's packed sequences of warmup.source. Each process reads
  its own rows of every global batch."""
  d = settings.data
  data.check_vocab(tok, model_vocab)
  source = settings.warmup.source if warmup else d.source
  docs, stats = data.open_documents(source, tok, min_tokens=d.min_prefix + 1, num_docs=d.num_docs,
                                    thought_format=thought_format(tok, settings.rlp.template),
                                    seed=settings.seed)
  if stats.max_token_id is not None:  # a stored dataset's ids must fit the model's embedding
    data.check_vocab(tok, model_vocab, {"max_token_id": stats.max_token_id})
  per_process = d.batch_size // jax.process_count()
  common = dict(seq_len=d.seq_len, batch_size=per_process, seed=settings.seed,
                process_index=jax.process_index(), process_count=jax.process_count())
  if settings.objective == "cpt" or warmup:
    return batches.cpt_dataset(docs, **common), stats
  pad = tok.eos_id if tok.eos_id is not None else 0
  return batches.rlp_dataset(docs, positions_per_doc=d.positions_per_doc, min_prefix=d.min_prefix,
                          pad_id=pad, marker_ids=configuration.marker_ids(settings, tok),
                          **common), stats


class Iterators:
  """The main data iterator and, with a format warm-up, the warm-up's; one checkpointable state."""

  def __init__(self, main, warmup=None):
    self.main, self.warmup = main, warmup

  @classmethod
  def open(cls, settings: schema.Run, tok, model_vocab: int) -> tuple["Iterators", data.DataStats]:
    ds, stats = dataset(settings, tok, model_vocab)
    its = cls(batches.make_iterator(ds, settings.data.workers))
    if settings.warmup.steps:
      wds, _ = dataset(settings, tok, model_vocab, warmup=True)
      its.warmup = batches.make_iterator(wds, settings.data.workers)
    return its, stats

  def next(self, step: int, warmup_steps: int):
    return next(self.warmup if step < warmup_steps else self.main)

  def get_state(self):
    if self.warmup is None:
      return self.main.get_state()
    return {"main": self.main.get_state(), "warmup": self.warmup.get_state()}

  def set_state(self, state):
    with_warmup = isinstance(state, dict) and set(state) == {"main", "warmup"}
    if (self.warmup is not None) != with_warmup:
      raise checkpoint.CheckpointError(
          "the checkpoint's data-iterator state was written by a run "
          f"{'with' if with_warmup else 'without'} a format warm-up and this run "
          f"{'has' if self.warmup is not None else 'has none'}; resume with the run's "
          "warmup.steps or use a new --workdir")
    if self.warmup is None:
      self.main.set_state(state)
    else:
      self.main.set_state(state["main"])
      self.warmup.set_state(state["warmup"])
