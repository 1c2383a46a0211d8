"""One small tokenizer interface over HF `tokenizers`, SentencePiece and GGUF-embedded vocabularies."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Sequence

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


class TokenizerError(ValueError):
  pass


class Tokenizer:
  """encode(text) -> list[int], decode(ids) -> str, plus the `<think>` / `</think>` token ids.

  `think_open_ids` / `think_close_ids` are one id when the vocabulary has the marker as a token
  (Qwen3), else the ids of the marker string tokenized as text (the documented fallback).
  """

  def __init__(self, backend, kind: str, fingerprint: str, eos_id: int | None = None,
               bos_id: int | None = None, add_bos: bool = False):
    self._backend = backend
    self.kind = kind
    self.fingerprint = fingerprint
    self.eos_id = eos_id
    self.bos_id = bos_id
    self.add_bos = bool(add_bos and bos_id is not None)  # documents start with BOS
    self.think_open_ids = self._marker(THINK_OPEN)
    self.think_close_ids = self._marker(THINK_CLOSE)

  @property
  def vocab_size(self) -> int:
    if self.kind == "sentencepiece":
      return self._backend.get_piece_size()
    return self._backend.get_vocab_size(with_added_tokens=True)

  def token_to_id(self, token: str) -> int | None:
    if self.kind == "sentencepiece":
      i = self._backend.piece_to_id(token)
      return None if i == self._backend.unk_id() and token != self._backend.id_to_piece(i) else i
    return self._backend.token_to_id(token)

  def _marker(self, text: str) -> tuple[int, ...]:
    i = self.token_to_id(text)
    return (i,) if i is not None else tuple(self.encode(text))

  def token_bytes(self) -> list[bytes]:
    """The bytes each id stands for (byte-level BPE, SentencePiece pieces); RPT's reward uses it."""
    if self.kind == "bytes":
      return [bytes([i]) for i in range(256)] + [b""] * len(_Bytes.SPECIALS)
    if self.kind == "sentencepiece":
      sp = self._backend
      out = []
      for i in range(sp.get_piece_size()):
        piece = sp.id_to_piece(i)
        if sp.is_byte(i):
          out.append(bytes([int(piece[3:5], 16)]))
        elif sp.is_control(i) or sp.is_unknown(i):
          out.append(b"")
        else:
          out.append(piece.replace("\u2581", " ").encode("utf-8"))
      return out
    inv = {c: i for i, c in enumerate(_byte_alphabet())}
    out = []
    for i in range(self.vocab_size):
      t = self._backend.id_to_token(i) or ""
      if self.kind == "gguf" or all(ch in inv for ch in t):
        out.append(bytes(inv[ch] for ch in t) if all(ch in inv for ch in t) else t.encode())
      else:
        out.append(t.replace("\u2581", " ").encode("utf-8"))
    return out

  def encode(self, text: str) -> list[int]:
    if self.kind == "sentencepiece":
      return list(self._backend.encode(text))
    return list(self._backend.encode(text, add_special_tokens=False).ids)

  def encode_document(self, text: str) -> list[int]:
    """A document's ids as the model was trained on them: BOS first when the tokenizer adds it
    (Llama-3, Llama-2 style), no EOS (the data pipeline appends it)."""
    ids = self.encode(text)
    return [int(self.bos_id)] + ids if self.add_bos else ids

  def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
    ids = [int(i) for i in ids]
    if self.kind == "sentencepiece":
      return self._backend.decode(ids)
    return self._backend.decode(ids, skip_special_tokens=skip_special_tokens)


def _byte_alphabet() -> list[str]:
  """GPT-2's byte -> printable character map, as a list indexed by byte value."""
  bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + list(
      range(ord("\xae"), ord("\xff") + 1))
  cs = bs[:]
  n = 0
  for b in range(256):
    if b not in bs:
      bs.append(b)
      cs.append(256 + n)
      n += 1
  table = dict(zip(bs, cs))
  return [chr(table[b]) for b in range(256)]


def _sha(*parts: bytes) -> str:
  h = hashlib.sha256()
  for p in parts:
    h.update(p)
  return h.hexdigest()[:16]


def tokenizer_from_gguf(reader, path: str) -> Tokenizer:
  """The byte-level BPE stored in a GGUF file, built as transformers builds it for the same file."""
  from tokenizers import AddedToken, Tokenizer as HFTokenizer, decoders, models, pre_tokenizers
  from models import gguf

  def field(key):
    return gguf.field(reader, key)

  kind = field("tokenizer.ggml.model")
  if kind != "gpt2":
    raise TokenizerError(f"{path}: GGUF tokenizer model {kind!r} is not supported (gpt2 byte-level "
                         "BPE only); pass a tokenizer.json or SentencePiece model instead")
  tokens = field("tokenizer.ggml.tokens")
  merges = [tuple(m.split(" ")) for m in field("tokenizer.ggml.merges")]
  types = field("tokenizer.ggml.token_type") or [1] * len(tokens)
  alphabet = set(pre_tokenizers.ByteLevel.alphabet())
  vocab = {t: i for i, t in enumerate(tokens)}
  tok = HFTokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  control = [AddedToken(t, normalized=False, special=True)
             for t, ty in zip(tokens, types) if ty == 3 and set(t) <= alphabet]
  tok.add_special_tokens(control)
  user = [AddedToken(t, normalized=False, special=False) for t, ty in zip(tokens, types) if ty == 4]
  if user:
    tok.add_tokens(user)
  fp = _sha("\n".join(tokens).encode(), "\n".join(" ".join(m) for m in merges).encode())
  return Tokenizer(tok, "gguf", fp, eos_id=field("tokenizer.ggml.eos_token_id"),
                   bos_id=field("tokenizer.ggml.bos_token_id"),
                   add_bos=bool(field("tokenizer.ggml.add_bos_token")))


class _Bytes:
  """UTF-8 bytes as ids 0-255, then <think>, </think>, <eos>, <pad>: for tiny models and tests."""
  SPECIALS = (THINK_OPEN, THINK_CLOSE, "<eos>", "<pad>")

  def get_vocab_size(self, with_added_tokens=True):
    return 256 + len(self.SPECIALS)

  def token_to_id(self, token):
    return 256 + self.SPECIALS.index(token) if token in self.SPECIALS else None

  def id_to_token(self, i):
    return self.SPECIALS[i - 256] if i >= 256 else bytes([i]).decode("latin-1")

  def encode(self, text, add_special_tokens=False):
    ids, i = [], 0
    while i < len(text):
      for sp in self.SPECIALS[:2]:
        if text.startswith(sp, i):
          ids.append(self.token_to_id(sp))
          i += len(sp)
          break
      else:
        ids.extend(text[i].encode("utf-8"))
        i += 1
    return type("Enc", (), {"ids": ids})()

  def decode(self, ids, skip_special_tokens=False):
    out, buf = [], bytearray()
    for i in ids:
      if i < 256:
        buf.append(i)
        continue
      out.append(buf.decode("utf-8", errors="replace"))
      buf = bytearray()
      if not skip_special_tokens:
        out.append(self.SPECIALS[i - 256])
    out.append(buf.decode("utf-8", errors="replace"))
    return "".join(out)


def byte_tokenizer() -> Tokenizer:
  return Tokenizer(_Bytes(), "bytes", "bytes-v1", eos_id=258)


_EOS_GUESSES = ("<|end_of_text|>", "<|endoftext|>", "</s>", "<eos>", "<|im_end|>")
_BOS_GUESSES = ("<|begin_of_text|>", "<s>", "<bos>")


def _json(path: str) -> dict:
  if not os.path.exists(path):
    return {}
  try:
    with open(path) as f:
      got = json.load(f)
    return got if isinstance(got, dict) else {}
  except (OSError, ValueError) as e:
    raise TokenizerError(f"{path} is not valid JSON ({e}); fix or remove it") from e


def hf_special_tokens(tok, directory: str) -> tuple[int | None, int | None, bool]:
  """(eos_id, bos_id, add_bos) of an HF tokenizer, read as transformers reads them: the
  directory's tokenizer_config.json, then special_tokens_map.json, then generation_config.json /
  config.json ids; a fixed list of common names only when none of them says. add_bos: the
  config's `add_bos_token`, else whether tokenizer.json's post-processor inserts BOS."""
  cfg = _json(os.path.join(directory, "tokenizer_config.json"))
  special = _json(os.path.join(directory, "special_tokens_map.json"))
  gen = _json(os.path.join(directory, "generation_config.json"))
  model_cfg = _json(os.path.join(directory, "config.json"))

  def token_id(name: str, guesses) -> int | None:
    for src in (cfg, special):
      t = src.get(f"{name}_token")
      t = t.get("content") if isinstance(t, dict) else t
      if isinstance(t, str) and tok.token_to_id(t) is not None:
        return tok.token_to_id(t)
    for src in (gen, model_cfg):
      i = src.get(f"{name}_token_id")
      i = i[0] if isinstance(i, list) and i else i
      if isinstance(i, int):
        return i
    return next((tok.token_to_id(t) for t in guesses if tok.token_to_id(t) is not None), None)

  eos, bos = token_id("eos", _EOS_GUESSES), token_id("bos", _BOS_GUESSES)
  if isinstance(cfg.get("add_bos_token"), bool):
    add_bos = cfg["add_bos_token"]
  else:
    with_special = tok.encode("a", add_special_tokens=True).ids
    add_bos = bos is not None and bool(with_special) and with_special[0] == bos
  return eos, bos, add_bos


def load_tokenizer(path: str) -> Tokenizer:
  """A tokenizer from tokenizer.json (or a directory holding it), a SentencePiece .model, a .gguf,
  or "bytes" (UTF-8 bytes plus <think>, </think>, <eos>, <pad>: 260 ids)."""
  if path == "bytes":
    return byte_tokenizer()
  if os.path.isdir(path):
    for name in ("tokenizer.json", "tokenizer.model"):
      if os.path.exists(os.path.join(path, name)):
        return load_tokenizer(os.path.join(path, name))
    raise TokenizerError(f"{path} holds no tokenizer.json or tokenizer.model")
  if not os.path.isfile(path):
    raise TokenizerError(f"tokenizer file {path} does not exist")
  with open(path, "rb") as f:
    magic = f.read(4)
  if path.endswith(".gguf") or magic == b"GGUF":  # memory-mapped: the weights are not read
    from models.gguf import open_reader
    return tokenizer_from_gguf(open_reader(path), path)
  with open(path, "rb") as f:
    data = f.read()
  if path.endswith(".json"):
    from tokenizers import Tokenizer as HFTokenizer
    try:
      tok = HFTokenizer.from_str(data.decode("utf-8"))
    except Exception as e:
      raise TokenizerError(f"{path} is not a valid tokenizer.json ({e})") from e
    eos, bos, add_bos = hf_special_tokens(tok, os.path.dirname(os.path.abspath(path)))
    return Tokenizer(tok, "hf", _sha(data), eos_id=eos, bos_id=bos, add_bos=add_bos)
  import sentencepiece as spm
  sp = spm.SentencePieceProcessor()
  try:
    sp.LoadFromSerializedProto(data)
  except Exception as e:
    raise TokenizerError(f"{path} is not a SentencePiece model, tokenizer.json or GGUF file ({e})") from e
  return Tokenizer(sp, "sentencepiece", _sha(data), eos_id=sp.eos_id() if sp.eos_id() >= 0 else None,
                   bos_id=sp.bos_id() if sp.bos_id() >= 0 else None)


def _bytes_as_hf():
  """The byte tokenizer as an HF `tokenizers` object with the same ids: byte-level BPE without
  merges (each byte one token, id = its value), <think> </think> <eos> <pad> at 256-259."""
  from tokenizers import AddedToken, Tokenizer as HFTokenizer, decoders, models, pre_tokenizers
  alphabet = {b: c for b, c in zip(range(256), _byte_alphabet())}
  vocab = {alphabet[b]: b for b in range(256)}
  for i, name in enumerate(_Bytes.SPECIALS):
    vocab[name] = 256 + i
  tok = HFTokenizer(models.BPE(vocab=vocab, merges=[], fuse_unk=False))
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
  tok.decoder = decoders.ByteLevel()
  tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in _Bytes.SPECIALS])
  return tok


def save_hf_tokenizer(tok: Tokenizer, out_dir: str) -> list[str]:
  """Writes the tokenizer files transformers' AutoTokenizer loads (tokenizer.json or
  tokenizer.model, tokenizer_config.json with BOS / EOS); returns the file names written."""
  os.makedirs(out_dir, exist_ok=True)
  written = []
  if tok.kind == "sentencepiece":
    with open(os.path.join(out_dir, "tokenizer.model"), "wb") as f:
      f.write(tok._backend.serialized_model_proto())
    written.append("tokenizer.model")
    cls = "LlamaTokenizer"
  else:
    backend = _bytes_as_hf() if tok.kind == "bytes" else tok._backend
    backend.save(os.path.join(out_dir, "tokenizer.json"))
    written.append("tokenizer.json")
    cls = "PreTrainedTokenizerFast"

  def name(i):
    if i is None:
      return None
    return (tok._backend.id_to_piece(int(i)) if tok.kind == "sentencepiece"
            else _Bytes.SPECIALS[int(i) - 256] if tok.kind == "bytes"
            else tok._backend.id_to_token(int(i)))

  config = {"tokenizer_class": cls, "bos_token": name(tok.bos_id), "eos_token": name(tok.eos_id),
            "add_bos_token": tok.add_bos, "add_eos_token": False,
            "clean_up_tokenization_spaces": False}
  with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
    json.dump({k: v for k, v in config.items() if v is not None}, f, indent=2)
  written.append("tokenizer_config.json")
  # generate() stops at EOS only when the model's generation config names it
  ids = {k: int(v) for k, v in (("bos_token_id", tok.bos_id), ("eos_token_id", tok.eos_id))
         if v is not None}
  if ids:
    with open(os.path.join(out_dir, "generation_config.json"), "w") as f:
      json.dump(ids, f, indent=2)
    written.append("generation_config.json")
  return written
