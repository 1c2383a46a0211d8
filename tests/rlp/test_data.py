"""Data pipelines: determinism, resume, per-process split, packing, positions, bad input."""

import dataclasses
import json
import os

import numpy as np
import pytest

import models
from rlp import batches
from rlp import data
from models.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def tok():
  return load_tokenizer(models.smollm2_path())


def _docs(n=40, seed=0):
  rng = np.random.default_rng(seed)
  import grain
  return grain.MapDataset.source([np.arange(i * 1000, i * 1000 + rng.integers(5, 60),
                                            dtype=np.int32) for i in range(n)])


def _rlp(docs, **kw):
  base = dict(seq_len=32, batch_size=4, positions_per_doc=3, min_prefix=4, pad_id=0, seed=7)
  base.update(kw)
  return batches.rlp_dataset(docs, **base)


def _take(it, n):
  return [next(it) for _ in range(n)]


def test_deterministic_and_exact_resume():
  docs = _docs()
  a = _take(iter(_rlp(docs)), 12)
  b = _take(iter(_rlp(docs)), 12)
  for x, y in zip(a, b):
    for f in dataclasses.fields(x):
      np.testing.assert_array_equal(getattr(x, f.name), getattr(y, f.name))
  it = iter(_rlp(docs))
  _take(it, 5)
  state = it.get_state()
  rest = _take(it, 7)
  resumed = iter(_rlp(docs))
  resumed.set_state(json.loads(json.dumps(state)))  # survives a JSON round trip (checkpoints)
  for x, y in zip(rest, _take(resumed, 7)):
    for f in dataclasses.fields(x):
      np.testing.assert_array_equal(getattr(x, f.name), getattr(y, f.name))


def test_process_split_covers_every_document_once():
  docs = _docs(n=37)
  seen = []
  for p in range(3):
    ds = batches._shard_and_shuffle(docs, seed=1, process_index=p, process_count=3, num_epochs=1)
    seen += [int(ds[i][0]) // 1000 for i in range(len(ds))]
  assert sorted(seen) == list(range(37))
  with pytest.raises(data.DataError, match="process_index"):
    batches._shard_and_shuffle(docs, 0, 3, 3, 1)


def test_positions_in_bounds_and_honour_min_prefix():
  for batch in _take(iter(_rlp(_docs(), min_prefix=6)), 20):
    pos, lengths = batch.cuts, batch.lengths
    assert pos.shape == (4, 3)
    assert np.all(pos >= 6) and np.all(pos < lengths[:, None])
    assert np.all(lengths <= 32)
  rng = np.random.default_rng(0)
  # among candidates only, never below min_prefix; with replacement only when too few
  for _ in range(20):
    assert set(batches.choose_positions(8, 2, 3, rng, np.asarray([1, 4, 6]))) == {4, 6}
  assert batches.choose_positions(8, 3, 3, rng, np.asarray([5])).tolist() == [5, 5, 5]
  with pytest.raises(data.DataError, match="no candidate"):
    batches.choose_positions(8, 1, 3, rng, np.asarray([1, 2]))


def test_a_marker_no_document_has_fails_with_one_line_instead_of_hanging():
  from models.tokenizer import byte_tokenizer
  tok = byte_tokenizer()
  docs, _ = data.open_documents("toy:train", tok, num_docs=8)
  with pytest.raises(data.DataError, match="none of the first 8 documents has the position marker"):
    batches.rlp_dataset(docs, seq_len=64, batch_size=4, positions_per_doc=1, min_prefix=4, pad_id=0,
                     marker_ids=tok.encode("#"))


def test_marker_positions_pick_the_token_after_each_marker():
  doc = np.asarray([5, 1, 2, 7, 1, 2, 9, 1])
  assert batches.marker_positions(doc, [1, 2]).tolist() == [3, 6]
  assert batches.marker_positions(doc, [1]).tolist() == [2, 5]  # the last 1 has no next token
  assert batches.marker_positions(doc, [4]).tolist() == []


def test_marker_selection_on_the_testbed_targets_answers():
  from models.tokenizer import byte_tokenizer
  tok = byte_tokenizer()
  docs, _ = data.open_documents("toy:train", tok, num_docs=16)
  ds = batches.rlp_dataset(docs, seq_len=64, batch_size=4, positions_per_doc=2, min_prefix=4,
                        pad_id=0, marker_ids=tok.encode("="))
  batch = next(iter(ds))
  for row, pos in zip(batch.tokens, batch.cuts):
    for t in pos:
      assert chr(row[t - 1]) == "=" and chr(row[t]).isdigit()
      # the digit is the sum of the four operands before '=' mod 10
      ops = [int(chr(c)) for c in row[t - 8:t - 1:2]]
      assert sum(ops) % 10 == int(chr(row[t]))


def test_pipelines_give_typed_batches_and_mappings_convert():
  """The pipelines yield DocBatch / LMBatch; a mapping with the same fields (a user's own
  pipeline) converts, and one with a missing or unknown field is refused by name."""
  rlp_batch = next(iter(_rlp(_docs())))
  assert isinstance(rlp_batch, batches.DocBatch) and rlp_batch.tokens.shape == (4, 32)
  lm = next(iter(batches.cpt_dataset(_docs(n=30), seq_len=64, batch_size=3, seed=0)))
  assert isinstance(lm, batches.LMBatch) and lm.segment_ids.shape == (3, 64)
  as_dict = {"tokens": rlp_batch.tokens, "lengths": rlp_batch.lengths, "cuts": rlp_batch.cuts}
  assert batches.DocBatch.of(as_dict).cuts is rlp_batch.cuts
  assert batches.DocBatch.of(rlp_batch) is rlp_batch
  short = batches.LMBatch.of({"inputs": 1, "targets": 2, "loss_mask": 3})
  assert short.segment_ids is None and short.positions is None
  with pytest.raises(ValueError, match=r"lacks \['cuts'\] and has unknown \['cut'\]"):
    batches.DocBatch.of({"tokens": 1, "lengths": 2, "cut": 3})
  with pytest.raises(TypeError, match="a DocBatch or a mapping"):
    batches.DocBatch.of([1, 2, 3])


def test_packing_never_crosses_documents():
  docs = _docs(n=30)
  batch = next(iter(batches.cpt_dataset(docs, seq_len=64, batch_size=3, seed=0)))
  seg, mask = batch.segment_ids, batch.loss_mask
  inp, tgt, pos = batch.inputs, batch.targets, batch.positions
  for r in range(3):
    for j in range(63):
      if mask[r, j]:
        # a trained pair stays inside one document: consecutive ids of one arange
        assert tgt[r, j] == inp[r, j] + 1
        assert seg[r, j] > 0
    starts = np.flatnonzero(np.diff(seg[r]) != 0) + 1
    for s in starts:
      if seg[r, s] > 0:
        assert pos[r, s] == 0
        assert mask[r, s - 1] == 0  # no loss across the boundary


def test_open_documents_counts_and_bad_utf8(tmp_path, tok):
  p = tmp_path / "c.jsonl"
  lines = [json.dumps({"text": t}) for t in ["hello world, a real document", "", "   ", "hi"]]
  p.write_bytes(("\n".join(lines) + "\n").encode() + b'{"text": "bad \xff byte here ok"}\n')
  ds, stats = data.open_documents(f"jsonl:{p}", tok, min_tokens=4)
  assert stats.skipped_empty == 2 and stats.skipped_short == 1 and stats.invalid_utf8 == 1
  assert len(ds) == 2 and stats.documents == 2
  with pytest.raises(data.DataError, match="not valid UTF-8"):
    data.open_documents(f"jsonl:{p}", tok, invalid_utf8="reject")
  q = tmp_path / "m.jsonl"
  q.write_text('{"text": "ok"}\n{"body": "x"}\n')
  with pytest.raises(data.DataError, match=r"m.jsonl:2 has no 'text' field"):
    data.open_documents(f"jsonl:{q}", tok)
  with pytest.raises(data.DataError, match="unknown data source"):
    data.open_documents("s3:bucket", tok)


def test_shards_roundtrip_hash_mismatch_and_truncation(tmp_path, tok):
  ds, stats = data.open_documents("reasoning:train", tok, num_docs=20)
  docs = [ds[i] for i in range(len(ds))]
  out = tmp_path / "shards"
  m = data.write_shards(docs, str(out), tok, num_shards=3, stats=stats, progress=False)
  assert m["documents"] == 20 and sum(m["documents_per_shard"]) == 20
  back, stats2 = data.open_documents(f"arrayrecord:{out}", tok)
  assert sorted(tuple(back[i].tolist()) for i in range(20)) == sorted(tuple(d.tolist()) for d in docs)
  with pytest.raises(data.DataError, match="already holds a dataset"):
    data.write_shards(docs, str(out), tok, progress=False)
  sp_path = tmp_path / "other.json"
  from tokenizers import Tokenizer, models as tm
  Tokenizer(tm.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]")).save(str(sp_path))
  other = load_tokenizer(str(sp_path))
  with pytest.raises(data.DataError, match=f"written by tokenizer {tok.fingerprint}.*{other.fingerprint}"):
    data.open_documents(f"arrayrecord:{out}", other)
  shard = out / m["shards"][1]
  shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
  with pytest.raises(data.DataError, match=m["shards"][1]):
    data.open_documents(f"arrayrecord:{out}", tok)


def test_vocab_larger_than_model_is_refused(tok):
  with pytest.raises(data.DataError, match=r"tokenizer vocab \(49152\) is larger.*\(1000\)"):
    data.check_vocab(tok, 1000)
  data.check_vocab(tok, 49152)


def test_tfds_builder_round_trip(tmp_path, tok):
  import tensorflow_datasets as tfds

  class RlpTinyText(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
          {"text": tfds.features.Text()}))

    def _split_generators(self, dl_manager):
      return {"train": self._generate_examples()}

    def _generate_examples(self):
      for i in range(6):
        yield i, {"text": f"document number {i} says hello"}

  RlpTinyText(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
  ds, _ = data.open_documents(f"tfds:rlp_tiny_text:train@{tmp_path}", tok)
  assert all(int(ds[i][-1]) == tok.eos_id for i in range(len(ds)))  # like every other source
  texts = sorted(tok.decode(ds[i][:-1]) for i in range(len(ds)))
  assert texts == sorted(f"document number {i} says hello" for i in range(6))


def test_thought_formatted_corpus_and_disjoint_splits():
  from rlp import corpora
  train = corpora.reasoning_problems("train", 300)
  ev = corpora.reasoning_problems("eval", 100)
  assert not {p["question"] for p in train} & {p["question"] for p in ev}
  t = corpora.thought_formatted_text(train[0])
  assert t.count("<think>") == 1 and t.count("</think>") == 1
  assert t.rstrip().endswith(f"#### {train[0]['answer']}")


def test_multiprocess_prefetch_is_deterministic_and_complete():
  docs = _docs(n=24)

  def epoch(workers):
    it = batches.make_iterator(_rlp(docs, num_epochs=1, batch_size=2), workers=workers)
    out = list(it)
    del it
    return out

  a, b, single = epoch(2), epoch(2), epoch(0)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x.tokens, y.tokens)
  first = lambda bs: sorted(int(t[0]) for x in bs for t in x.tokens)
  assert first(a) == first(single) and len(first(a)) == 24


def test_thoughts_source_inserts_the_runs_exact_thought_ids():
  from models.tokenizer import byte_tokenizer
  from rlp.thought_format import thought_format
  tok = byte_tokenizer()
  fmt = thought_format(tok, "hm ")
  docs, _ = data.open_documents("thoughts:toy:train", tok, num_docs=8, thought_format=fmt)
  plain, _ = data.open_documents("toy:train", tok, num_docs=8)
  for i in range(8):
    d, p = list(docs[i]), list(plain[i])
    a = d.index(fmt.prompt_ids[-1]) - len(fmt.prompt_ids) + 1  # where the thought was inserted
    b = d.index(fmt.close_ids[0]) + 1
    assert d[a:a + len(fmt.prompt_ids)] == list(fmt.prompt_ids)
    assert d[:a] + d[b:] == p  # the document resumes exactly where it stopped
    thought = d[a + len(fmt.prompt_ids):b - 1]
    assert 1 <= len(thought) <= data.THOUGHT_INSERT_MAX and thought == p[a:a + len(thought)]
  with pytest.raises(data.DataError, match="warmup.source"):
    data.open_documents("thoughts:toy:train", tok, num_docs=2)


def test_testbed_corpus_worked_steps_and_splits():
  from rlp import corpora
  import re
  docs = corpora.toy_documents("train", 50, worked_frac=0.5)
  worked = plain = 0
  for doc in docs:
    for line in doc.strip().split("\n"):
      m = re.fullmatch(r"(\d)\+(\d)\+(\d)\+(\d)=(?:<think>(\d{8})</think>)?(\d)", line)
      assert m, line
      digits = [int(x) for x in m.group(1, 2, 3, 4)]
      assert int(m.group(6)) == sum(digits) % 10
      if m.group(5):
        worked += 1
        steps = m.group(5)
        assert [int(c) for c in steps[0::2]] == digits  # the operands
        assert [int(c) for c in steps[1::2]] == [sum(digits[:i + 1]) % 10 for i in range(4)]
      else:
        plain += 1
  assert worked > 40 and plain > 40  # mixed within the corpus (per problem)
  assert corpora.toy_documents("eval", 5) != corpora.toy_documents("train", 5)
  assert corpora.toy_documents("train", 5) == corpora.toy_documents("train", 5)
  with pytest.raises(data.DataError, match="WORKED_FRACTION"):
    from models.tokenizer import byte_tokenizer
    data.open_documents("toy:train:lots", byte_tokenizer())


def test_testbed_partial_traces():
  """toy:SPLIT:FRAC:LENGTHS: a worked problem writes only the first m steps, m drawn from the
  lengths (repeats weight them); plain problems are as before."""
  import re
  counts = {}
  for doc in data.toy_texts("toy:train:1.0:1-1-4", 300):
    for line in doc.strip().split("\n"):
      m = re.fullmatch(r"(\d)\+(\d)\+(\d)\+(\d)=<think>(\d+)</think>(\d)", line)
      assert m, line
      digits, steps = [int(x) for x in m.group(1, 2, 3, 4)], m.group(5)
      assert int(m.group(6)) == sum(digits) % 10
      full = "".join(f"{d}{sum(digits[:i + 1]) % 10}" for i, d in enumerate(digits))
      assert full.startswith(steps) and len(steps) in (2, 8)
      counts[len(steps) // 2] = counts.get(len(steps) // 2, 0) + 1
  assert abs(counts[4] / (counts[1] + counts[4]) - 1 / 3) < 0.05, counts
  with pytest.raises(data.DataError, match=r"trace lengths must be steps in \[1, 4\]"):
    data.toy_texts("toy:train:0.5:0-4")
  with pytest.raises(data.DataError, match="joined by"):
    data.toy_texts("toy:train:0.5:four")


def _llama3_style_dir(tmp_path, tokenizer_config=None, generation_config=None):
  """A small tokenizer.json built like Llama-3's: its post-processor prepends <|begin_of_text|>,
  the end-of-document token is <|end_of_text|> (a name the old fixed list did not know)."""
  from tokenizers import Tokenizer as HFTokenizer, models as hm, pre_tokenizers, processors
  vocab = {w: i for i, w in enumerate(["[UNK]", "the", "cat", "sat", "<|begin_of_text|>",
                                       "<|end_of_text|>", "<|eot_id|>"])}
  tok = HFTokenizer(hm.WordLevel(vocab=vocab, unk_token="[UNK]"))
  tok.pre_tokenizer = pre_tokenizers.Whitespace()
  tok.add_special_tokens(["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"])
  tok.post_processor = processors.TemplateProcessing(
      single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", 4)])
  d = tmp_path / "llama3ish"
  d.mkdir()
  tok.save(str(d / "tokenizer.json"))
  if tokenizer_config is not None:
    (d / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
  if generation_config is not None:
    (d / "generation_config.json").write_text(json.dumps(generation_config))
  return str(d)


def test_hf_tokenizer_reads_bos_eos_from_its_directory(tmp_path):
  d = _llama3_style_dir(tmp_path, {"bos_token": "<|begin_of_text|>",
                                   "eos_token": "<|end_of_text|>"})
  tok = load_tokenizer(d)
  assert (tok.bos_id, tok.eos_id, tok.add_bos) == (4, 5, True)
  docs = data.tokenize_documents(["the cat sat"], tok, 1, data.DataStats())
  assert docs[0].tolist() == [4, 1, 2, 3, 5]  # BOS, the text, EOS
  # the config can turn BOS off; an instruct-style generation config names EOS by id
  tok = load_tokenizer(_llama3_style_dir(_sub(tmp_path, "b"), {"add_bos_token": False},
                                           {"eos_token_id": [6, 5]}))
  assert (tok.eos_id, tok.add_bos) == (6, False)
  assert data.tokenize_documents(["the cat"], tok, 1, data.DataStats())[0].tolist() == [1, 2, 6]
  # no config files: the post-processor says BOS is added; EOS by its well-known name
  tok = load_tokenizer(_llama3_style_dir(_sub(tmp_path, "c")))
  assert (tok.bos_id, tok.eos_id, tok.add_bos) == (4, 5, True)


def _sub(path, name):
  path = path / name
  path.mkdir()
  return path


def test_stored_dataset_ids_are_checked_against_the_model_vocab(tmp_path):
  """An ArrayRecord dataset's max_token_id (manifest) must fit the model's embedding."""
  from configs import tiny
  from rlp import inputs
  tok = load_tokenizer("bytes")
  out = str(tmp_path / "ds")
  docs = data.tokenize_documents(["a first document with enough tokens to train on"] * 4, tok, 2,
                                 data.DataStats())
  data.write_shards(docs, out, tok, progress=False)
  c = tiny.get_config()
  c.data.source, c.data.min_prefix = f"arrayrecord:{out}", 4
  inputs.dataset(c, tok, 260)  # fits
  manifest = json.loads(open(os.path.join(out, "manifest.json")).read())
  manifest["max_token_id"] = 400  # e.g. written for a larger vocabulary
  with open(os.path.join(out, "manifest.json"), "w") as f:
    json.dump(manifest, f)
  with pytest.raises(data.DataError, match="token id 400 >= the model's vocab"):
    inputs.dataset(c, tok, 260)
