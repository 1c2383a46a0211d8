"""Every field of a resolved config with its value and the comment configs/base.py gives it
(`rlp-train --config=FILE --print_config`)."""

from __future__ import annotations

import os
import re

_ALIAS = re.compile(r"^\s*c\.(\w+) = (\w+) = ml_collections\.ConfigDict\(\)")
_FIELD = re.compile(r"^\s*(\w+)\.(\w+(?:\.\w+)*) = (.*?)(?:\s+#\s?(.*))?$")
_MORE = re.compile(r"^\s*#\s+(.*)$")


def field_comments(path: str | None = None) -> dict[str, str]:
  """'rlp.group_size' -> its comment in configs/base.py (continuation lines joined)."""
  path = path or os.path.join(os.path.dirname(__file__), "base.py")
  alias = {"c": ""}
  out, last = {}, None
  with open(path) as f:
    for line in f:
      m = _ALIAS.match(line)
      if m:
        alias[m.group(2)] = m.group(1) + "."
        last = None
        continue
      m = _FIELD.match(line)
      if m and m.group(1) in alias:
        last = alias[m.group(1)] + m.group(2)
        if m.group(4):
          out[last] = m.group(4).strip()
        continue
      m = _MORE.match(line)
      if m and last is not None and last in out:
        out[last] += " " + m.group(1).strip()
        continue
      last = None
  return out


def _leaves(node, prefix=""):
  for k in sorted(node.keys()):
    v = node[k]
    if hasattr(v, "keys"):
      yield from _leaves(v, f"{prefix}{k}.")
    else:
      yield prefix + k, v


def describe(config) -> str:
  comments = field_comments()
  lines = []
  for name, value in _leaves(config):
    note = comments.get(name)
    lines.append(f"{name} = {value!r}" + (f"  # {note}" if note else ""))
  return "\n".join(lines)
