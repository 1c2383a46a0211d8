"""Reading GGUF files: one opener and one field reader, for the weights and the tokenizer."""

from __future__ import annotations

import os


class WeightsError(ValueError):
  """A weights file or directory that cannot be used, with what is wrong and what to do."""


def open_reader(path: str):
  """A gguf.GGUFReader over `path` (memory-mapped: tensors are read when touched), or a
  WeightsError that says what is wrong with the file."""
  import gguf
  if not os.path.isfile(path):
    raise WeightsError(f"{path} does not exist")
  with open(path, "rb") as f:
    magic = f.read(4)
  if magic != b"GGUF":
    raise WeightsError(f"{path} is not a GGUF file (magic {magic!r}, expected b'GGUF')")
  try:
    return gguf.GGUFReader(path)
  except Exception as e:  # the gguf package raises assorted errors on a damaged file
    raise WeightsError(f"{path} is a damaged GGUF file ({type(e).__name__}: {e})") from e


def field(reader, key: str, default=None):
  """The decoded contents of a metadata field, or `default` when the file has none."""
  f = reader.fields.get(key)
  return default if f is None else f.contents()
