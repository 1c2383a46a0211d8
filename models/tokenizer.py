"""One small tokenizer interface over HF `tokenizers`, SentencePiece and GGUF-embedded vocabularies."""

from __future__ import annotations

import hashlib
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
               bos_id: int | None = None):
    self._backend = backend
    self.kind = kind
    self.fingerprint = fingerprint
    self.eos_id = eos_id
    self.bos_id = bos_id
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

  def field(key):
    f = reader.fields.get(key)
    return None if f is None else f.contents()

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
                   bos_id=field("tokenizer.ggml.bos_token_id"))


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
    data = f.read()
  if path.endswith(".gguf") or data[:4] == b"GGUF":
    from models.weights import _gguf_reader
    return tokenizer_from_gguf(_gguf_reader(path), path)
  if path.endswith(".json"):
    from tokenizers import Tokenizer as HFTokenizer
    try:
      tok = HFTokenizer.from_str(data.decode("utf-8"))
    except Exception as e:
      raise TokenizerError(f"{path} is not a valid tokenizer.json ({e})") from e
    eos = next((tok.token_to_id(t) for t in ("<|endoftext|>", "</s>", "<|im_end|>", "<eos>")
                if tok.token_to_id(t) is not None), None)
    return Tokenizer(tok, "hf", _sha(data), eos_id=eos)
  import sentencepiece as spm
  sp = spm.SentencePieceProcessor()
  try:
    sp.LoadFromSerializedProto(data)
  except Exception as e:
    raise TokenizerError(f"{path} is not a SentencePiece model, tokenizer.json or GGUF file ({e})") from e
  return Tokenizer(sp, "sentencepiece", _sha(data), eos_id=sp.eos_id() if sp.eos_id() >= 0 else None,
                   bos_id=sp.bos_id() if sp.bos_id() >= 0 else None)
