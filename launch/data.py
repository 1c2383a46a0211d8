"""rlp-data: build tokenized ArrayRecord shards, train a SentencePiece tokenizer, inspect shards.

  rlp-data build --source=reasoning:train --tokenizer=PATH --output=DIR [--num_shards=4]
  rlp-data build --source=jsonl:corpus.jsonl --tokenizer=PATH --output=DIR
  rlp-data train-tokenizer --source=shakespeare --vocab_size=8000 --output=DIR/sp
  rlp-data inspect --output=DIR
  rlp-data diversity SOURCE [--model=smollm2] [--proj_dim=1024] [--max_docs=N]
                    [--projection=sketch|dense] [--state_file=FILE]
  rlp-data select SOURCE --by=gvendi [--method=cluster|greedy] --n=N --output=DIR
                  [--random_output=DIR2]

diversity prints one JSON line: the G-Vendi score of the documents (gradient diversity under the
proxy --model: smollm2, a GGUF file, an HF directory or a run's workdir; rlp/diversity.py), n,
proj_dim, projection, model, seconds and seconds per document. select writes the N most diverse documents of the pool as an
ArrayRecord dataset (data.source=arrayrecord:DIR) in the proxy's tokenizer, with the G-Vendi of
the selection and of a random subset of the same size (written to --random_output when given:
the baseline of a selected-vs-random experiment, configs/ablations/data_selection.py).
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags

from launch import cli

flags.DEFINE_string("source", "reasoning:train", "data source spec (see rlp/data.py)")
flags.DEFINE_string("tokenizer", None, "tokenizer.json, SentencePiece .model or .gguf; default: "
                    "the SmolLM2 GGUF")
flags.DEFINE_string("output", None, "output directory (build, inspect) or model prefix")
flags.DEFINE_integer("num_shards", 1, "ArrayRecord shards to write", lower_bound=1)
flags.DEFINE_integer("min_tokens", 2, "skip documents shorter than this", lower_bound=1)
flags.DEFINE_integer("num_docs", None, "limit the number of documents", lower_bound=1)
flags.DEFINE_enum("invalid_utf8", "replace", ["replace", "reject"], "invalid UTF-8 input")
flags.DEFINE_integer("vocab_size", 8000, "train-tokenizer: vocabulary size")
flags.DEFINE_bool("overwrite", False, "replace an existing dataset in --output")
flags.DEFINE_string("model", "smollm2", "diversity / select: the proxy model (smollm2, GGUF, HF "
                    "directory or a run's workdir)")
flags.DEFINE_integer("proj_dim", 1024, "diversity / select: projected gradient dimension d",
                     lower_bound=1)
flags.DEFINE_integer("max_docs", None, "diversity / select: at most this many documents",
                     lower_bound=1)
flags.DEFINE_integer("seq_len", 256, "diversity / select: tokens per document (truncated)",
                     lower_bound=2)
flags.DEFINE_integer("batch", 4, "diversity / select: documents per gradient batch",
                     lower_bound=1)
flags.DEFINE_integer("seed", 0, "diversity / select: projection and selection seed")
flags.DEFINE_enum("projection", "sketch", ["sketch", "dense"], "diversity / select: how gradients "
                  "are projected to --proj_dim: a count sketch (O(P) per document, one gradient "
                  "in memory at a time) or the paper's dense Rademacher matrix (--batch gradients "
                  "in memory; drawing the matrix costs far more than the gradient)")
flags.DEFINE_string("state_file", None, "diversity / select: save the partial result here after "
                    "every batch; a rerun with the same settings continues from it")
flags.DEFINE_enum("by", "gvendi", ["gvendi"], "select: the criterion")
flags.DEFINE_string("random_output", None, "select: also write the random subset of the same "
                    "size from the same pool (the baseline g_vendi_random is measured on) here")
flags.DEFINE_enum("method", "cluster", ["cluster", "greedy"], "select: the paper's cluster "
                  "filter or greedy order-2 Vendi")
flags.DEFINE_integer("n", None, "select: documents to keep", lower_bound=1)
FLAGS = flags.FLAGS
COMMANDS = ("build", "train-tokenizer", "inspect", "diversity", "select")


def _tokenizer():
  import models
  from models.tokenizer import load_tokenizer
  return load_tokenizer(FLAGS.tokenizer or models.smollm2_path())


def _texts(spec):
  from rlp import corpora, data
  kind, _, arg = spec.partition(":")
  if kind in ("reasoning", "reasoning_thought"):
    return corpora.reasoning_documents(arg or "train", FLAGS.num_docs,
                                       thought_format=kind == "reasoning_thought"), data.DataStats()
  if kind == "shakespeare":
    return corpora.shakespeare_documents(), data.DataStats()
  if kind == "toy":
    return data.toy_texts(spec, FLAGS.num_docs), data.DataStats()
  if kind in ("text", "jsonl"):
    stats = data.DataStats()
    return data.text_documents(arg, FLAGS.invalid_utf8, stats), stats
  raise data.DataError(f"rlp-data: source {spec!r} cannot be built from (reasoning, "
                       "reasoning_thought, shakespeare, toy[:split[:worked_frac[:trace_lengths]]], text:PATH, "
                       "jsonl:PATH)")


def build():
  from tqdm import tqdm
  from rlp import data
  if not FLAGS.output:
    raise data.DataError("rlp-data build needs --output=DIR")
  tok = _tokenizer()
  texts, stats = _texts(FLAGS.source)
  if FLAGS.num_docs:
    texts = texts[:FLAGS.num_docs]
  docs = data.tokenize_documents(tqdm(texts, desc="tokenizing", unit="doc"), tok, FLAGS.min_tokens,
                                 stats)
  manifest = data.write_shards(docs, FLAGS.output, tok, FLAGS.num_shards, stats, FLAGS.overwrite)
  print(json.dumps({k: manifest[k] for k in ("documents", "tokens", "skipped_empty",
                                             "skipped_short", "invalid_utf8", "tokenizer")}))


def train_tokenizer():
  import sentencepiece as spm
  from rlp import data
  if not FLAGS.output:
    raise data.DataError("rlp-data train-tokenizer needs --output=PREFIX")
  if os.path.exists(FLAGS.output + ".model") and not FLAGS.overwrite:
    raise data.DataError(f"{FLAGS.output}.model exists; pass --overwrite or another --output")
  texts, _ = _texts(FLAGS.source)
  os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
  try:
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(t for t in texts if t.strip()), model_prefix=FLAGS.output,
        vocab_size=FLAGS.vocab_size, model_type="bpe", byte_fallback=True,
        user_defined_symbols=["<think>", "</think>"], character_coverage=0.9995,
        minloglevel=2)
  except RuntimeError as e:  # e.g. a vocabulary smaller than the text's characters, or too big
    why = str(e).strip().splitlines()[-1]
    raise data.DataError(f"SentencePiece could not train --vocab_size={FLAGS.vocab_size} on "
                         f"{FLAGS.source} ({why}); change --vocab_size") from e
  from models.tokenizer import load_tokenizer
  tok = load_tokenizer(FLAGS.output + ".model")
  print(json.dumps({"model": FLAGS.output + ".model", "vocab_size": tok.vocab_size,
                    "fingerprint": tok.fingerprint}))


def inspect():
  from rlp import data
  ds, manifest = data.open_shards(FLAGS.output)
  lengths = [len(ds[i]) for i in range(min(len(ds), 1000))]
  print(json.dumps({**{k: manifest[k] for k in ("documents", "tokens", "tokenizer")},
                    "mean_doc_tokens_sampled": sum(lengths) / max(len(lengths), 1)}))


def _gradient_pool(source):
  """The proxy model, its tokenizer, the documents of `source` and their G-Vendi measurement."""
  import numpy as np
  from rlp import data, diversity, evaluate
  model, tok, desc = evaluate.load_for_eval(FLAGS.model)
  ds, _ = data.open_documents(source, tok, min_tokens=2, num_docs=FLAGS.max_docs)
  docs = [np.asarray(ds[i]) for i in range(len(ds) if FLAGS.max_docs is None
                                           else min(len(ds), FLAGS.max_docs))]
  got = diversity.measure(model, docs, seq_len=FLAGS.seq_len, proj_dim=FLAGS.proj_dim,
                          batch_size=FLAGS.batch, seed=FLAGS.seed, progress=True,
                          projection=FLAGS.projection, state_file=FLAGS.state_file)
  return tok, docs, got, desc


def diversity_cmd(source):
  _, _, got, desc = _gradient_pool(source)
  from rlp import metrics
  print(json.dumps({"g_vendi": got.g_vendi, "n": got.n, "proj_dim": got.proj_dim,
                    "projection": FLAGS.projection, "model": FLAGS.model, "source": source,
                    "seq_len": FLAGS.seq_len, "seconds_per_doc": round(got.seconds / got.n, 3),
                    "seconds": round(got.seconds, 2),
                    "host_rss_peak_gib": round(metrics.host_rss_peak_gib(), 2)}))


def select_cmd(source):
  import numpy as np
  from rlp import data, diversity
  if not FLAGS.output or not FLAGS.n:
    raise data.DataError("rlp-data select needs --n=N and --output=DIR")
  outs = [FLAGS.output] + ([FLAGS.random_output] if FLAGS.random_output else [])
  if len(set(map(os.path.abspath, outs))) < len(outs):
    raise data.DataError("--random_output must differ from --output")
  for out in outs:
    if os.path.exists(os.path.join(out, "manifest.json")) and not FLAGS.overwrite:
      raise data.DataError(f"{out} already holds a dataset (manifest.json); choose another "
                           "directory or pass --overwrite")
  tok, docs, got, _ = _gradient_pool(source)
  try:
    idx = diversity.select(got.z, FLAGS.n, by=FLAGS.method, seed=FLAGS.seed)
  except diversity.DiversityError as e:
    raise data.DataError(str(e)) from None
  rand = np.random.default_rng(FLAGS.seed).choice(len(docs), FLAGS.n, replace=False)
  manifest = data.write_shards([docs[i] for i in idx], FLAGS.output, tok, FLAGS.num_shards,
                               overwrite=FLAGS.overwrite)
  extra = {}
  if FLAGS.random_output:
    rm = data.write_shards([docs[i] for i in sorted(rand)], FLAGS.random_output, tok,
                           FLAGS.num_shards, overwrite=FLAGS.overwrite)
    extra = {"random_output": FLAGS.random_output, "random_tokens": rm["tokens"]}
  print(json.dumps({"selected": len(idx), "pool": len(docs), "method": FLAGS.method,
                    "g_vendi_selected": diversity.g_vendi(got.z[idx]),
                    "g_vendi_random": diversity.g_vendi(got.z[rand]),
                    "g_vendi_pool": got.g_vendi, "output": FLAGS.output,
                    "tokens": manifest["tokens"], **extra, "seconds": round(got.seconds, 2)}))


def main(argv):
  if len(argv) < 2 or argv[1] not in COMMANDS or len(argv) > 3 or (
      len(argv) == 3 and argv[1] not in ("diversity", "select")):
    raise app.UsageError(f"usage: rlp-data {{{'|'.join(COMMANDS)}}} [SOURCE] --flags (got "
                         f"{argv[1:]})")
  source = argv[2] if len(argv) == 3 else FLAGS.source
  if argv[1] == "diversity":
    return diversity_cmd(source)
  if argv[1] == "select":
    return select_cmd(source)
  {"build": build, "train-tokenizer": train_tokenizer, "inspect": inspect}[argv[1]]()


def run():
  cli.run(main, sys.modules[__name__], "rlp-data")


if __name__ == "__main__":
  run()
