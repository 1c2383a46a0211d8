"""The one thought format: the tokens forced before a thought, the closer that ends it, and every
other tokenization of the closer a model can emit.

The sampler, the trainer's teacher-forced recomputation, the format warm-up and `rlp-eval` all take
their ids from `thought_format`, so a thought is written, scored, taught and evaluated as the same
token sequence:  x_<t  [template] <think>  thought  </think>  x_t.

Where the vocabulary has `<think>` / `</think>` as tokens (Qwen3, the byte tokenizer) they are used.
Otherwise the markers are text, and a BPE vocabulary tokenizes the closer differently after a space
(SmolLM2: '</think>' is ['</', 'think', '>'] but ' </think>' is [' </', 'think', '>']); a model that
writes the spaced form has closed its thought too, so both end it.
"""

from __future__ import annotations

import dataclasses

from models.tokenizer import THINK_CLOSE, THINK_OPEN, Tokenizer


@dataclasses.dataclass(frozen=True)
class ThoughtFormat:
  prompt_ids: tuple[int, ...]  # template + <think>: forced before every thought
  close_ids: tuple[int, ...]  # </think>: appended when a thought hits its length limit
  close_alts: tuple[tuple[int, ...], ...] = ()  # other tokenizations that also end a thought
  # the dedicated <think> token when the vocabulary has one (None for text markers): a no-thought
  # baseline is renormalised without it (rlp.objective.token_logp's `exclude`)
  open_token: int | None = None

  def wrap(self, thought_ids) -> list[int]:
    """The ids inserted at a position for a given thought: prompt + thought + closer."""
    return list(self.prompt_ids) + [int(i) for i in thought_ids] + list(self.close_ids)


def _marker_ids(tok: Tokenizer, text: str) -> tuple[int, ...]:
  i = tok.token_to_id(text)
  return (i,) if i is not None else tuple(tok.encode(text))


def thought_format(tok: Tokenizer, template: str = "") -> ThoughtFormat:
  """template: text forced before `<think>` (e.g. an instruction to think briefly), tokenized on
  its own; '' for none."""
  open_ids, close_ids = _marker_ids(tok, THINK_OPEN), _marker_ids(tok, THINK_CLOSE)
  alts = []
  if tok.token_to_id(THINK_CLOSE) is None:
    for lead in (" ", "\n", "  "):
      ids = tuple(tok.encode(lead + THINK_CLOSE))
      # drop leading tokens that are only whitespace ('\n' on its own): the closer follows them
      while ids and not tok.decode(ids[:1]).strip():
        ids = ids[1:]
      if ids and ids != close_ids and ids not in alts:
        alts.append(ids)
  template_ids = tuple(tok.encode(template)) if template else ()
  dedicated = tok.token_to_id(THINK_OPEN)
  return ThoughtFormat(prompt_ids=template_ids + open_ids, close_ids=close_ids,
                       close_alts=tuple(alts), open_token=dedicated)
