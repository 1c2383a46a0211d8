"""One thought format for every consumer: markers as tokens or text, closer variants."""

from models.tokenizer import byte_tokenizer
from rlp import thought_format


def test_byte_tokenizer_uses_marker_tokens():
  tok = byte_tokenizer()
  f = thought_format.thought_format(tok, "hm")
  assert f.prompt_ids == tuple(b"hm") + (256,)
  assert f.close_ids == (257,) and f.close_alts == ()
  assert f.wrap([1, 2]) == [104, 109, 256, 1, 2, 257]


def test_text_markers_collect_every_closer_tokenization(smollm2):
  _, tok, _ = smollm2
  f = thought_format.thought_format(tok)
  assert tok.decode(f.prompt_ids) == "<think>"
  assert tok.decode(f.close_ids) == "</think>"
  assert f.close_alts, "SmolLM2 tokenizes ' </think>' differently; it must end a thought too"
  for alt in f.close_alts:
    assert tok.decode(alt).strip() == "</think>" and alt != f.close_ids
