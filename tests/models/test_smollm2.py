"""The real SmolLM2-135M GGUF through our loader vs transformers' own load of the same file."""

import os

import numpy as np
import pytest
import torch
import transformers

import models

SENTENCE = "The quick brown fox jumps over the lazy dog because it wanted to see the river."


@pytest.fixture(scope="module")
def reference(smollm2):
  _, _, path = smollm2
  ref = transformers.AutoModelForCausalLM.from_pretrained(
      os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32)
  ref.eval()
  tok = transformers.AutoTokenizer.from_pretrained(os.path.dirname(path),
                                                   gguf_file=os.path.basename(path))
  return ref, tok


def test_config(smollm2):
  cfg = smollm2[0].config
  assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.vocab_size) == (
      30, 576, 9, 3, 49152)
  assert cfg.tie_embeddings and cfg.rope_theta == 1e5


def test_logits_match_transformers(smollm2, reference):
  model, tok, _ = smollm2
  ref, _ = reference
  ids = tok.encode(SENTENCE)
  with torch.no_grad():
    want = ref(torch.tensor([ids])).logits.numpy()
  got = np.asarray(model(np.asarray([ids], np.int32)))
  assert np.abs(got - want).max() <= 1e-3
  np.testing.assert_array_equal(got.argmax(-1), want.argmax(-1))


def test_greedy_continuation_matches_transformers(smollm2, reference):
  model, tok, _ = smollm2
  ref, _ = reference
  ids = tok.encode("The capital of France is")
  with torch.no_grad():
    want = ref.generate(torch.tensor([ids]), max_new_tokens=20, do_sample=False, top_k=None,
                        top_p=None, temperature=None)[0, len(ids):].tolist()
  got = np.asarray(models.greedy_generate(model, ids, 20))[0].tolist()
  assert got == want
  assert "Paris" in tok.decode(got)


def test_tokenizer_matches_transformers(smollm2, reference):
  _, tok, _ = smollm2
  _, ref_tok = reference
  texts = [SENTENCE, "  leading spaces and trailing  ", "Numbers 12345 and 3.14159!",
           "Ünïcödé — dashes, “quotes”, emoji 🙂", "<think>reasoning</think> answer",
           "line one\nline two\n\n\ttabbed", "<|im_start|>user\nhi<|im_end|>"]
  for text in texts:
    assert tok.encode(text) == ref_tok.encode(text, add_special_tokens=False), text
    assert tok.decode(tok.encode(text)) == text
