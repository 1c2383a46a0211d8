"""Every field of a resolved config with its value and its help from the schema (rlp/schema.py)
(`rlp-train --config=FILE --print_config`)."""

from __future__ import annotations

from rlp import schema


def _leaves(node, prefix=""):
  for k in sorted(node.keys()):
    v = node[k]
    if hasattr(v, "keys"):
      yield from _leaves(v, f"{prefix}{k}.")
    else:
      yield prefix + k, v


def describe(config) -> str:
  helps = schema.help_texts()
  lines = []
  for name, value in _leaves(config):
    note = helps.get(name)
    lines.append(f"{name} = {value!r}" + (f"  # {note}" if note else ""))
  return "\n".join(lines)
