"""The machinery of a config schema, apart from any particular field: `setting` declares a
field (default, one-line help, rule on its value), `Group` is a frozen dataclass of such fields
checked when built, and the helpers that check a value against a field, read a group's values from
a ConfigDict and turn a group into its ConfigDict of defaults. The run's fields are rlp/schema.py."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Callable, Iterator

import ml_collections


class ConfigError(ValueError):
  """One line per bad field: the field, its value and the allowed range."""


Rule = Callable[[Any], bool]


def setting(default, help: str, rule: Rule | None = None, allowed: str = "",
            choices: tuple[str, ...] | None = None):
  """A config field: its default, one-line help and (optionally) a rule on its value with the
  text that says what the rule allows. `choices`: the rule is membership."""
  if choices is not None:
    rule, allowed = (lambda v: v in choices), " | ".join(choices)
  return dataclasses.field(default=default,
                           metadata=dict(help=help, rule=rule, allowed=allowed))


def at_least(lo: int, note: str = "") -> dict:
  """An integer rule: v >= lo."""
  return dict(rule=lambda v: v >= lo, allowed=f">= {lo}" + (f" ({note})" if note else ""))


def non_negative(note: str = "") -> dict:
  """A number rule: v >= 0."""
  return dict(rule=lambda v: v >= 0, allowed=">= 0" + (f" ({note})" if note else ""))


class Group:
  """A group of fields (config.<name>): frozen, and checked field by field when built."""
  NAME: typing.ClassVar[str] = ""

  def __post_init__(self):
    bad = list(field_errors(type(self), vars(self)))
    if bad:
      raise ConfigError("\n".join(bad))


def line(field: str, value, allowed: str) -> str:
  return f"config.{field} = {value!r} is invalid: must be {allowed}"


def type_ok(tp, v) -> bool:
  """v is a value of the annotation tp (int | None, tuple[int, ...], str, float, bool)."""
  origin = typing.get_origin(tp)
  if origin in (typing.Union, types.UnionType):
    return any(type_ok(a, v) for a in typing.get_args(tp))
  if origin is tuple:
    (elem, _) = typing.get_args(tp)
    return isinstance(v, (tuple, list)) and all(type_ok(elem, x) for x in v)
  if tp is type(None):
    return v is None
  if tp is bool:
    return isinstance(v, bool)
  if tp is int:
    return isinstance(v, int) and not isinstance(v, bool)
  if tp is float:
    return isinstance(v, (int, float)) and not isinstance(v, bool)
  return isinstance(v, tp)


TYPE_WORDS = {bool: "True | False", int: "an integer", float: "a number", str: "text"}


def fields(cls) -> list[tuple[dataclasses.Field, Any]]:
  """(field, its type) of a group's settings."""
  hints = typing.get_type_hints(cls)
  return [(f, hints[f.name]) for f in dataclasses.fields(cls) if "help" in f.metadata]


def problem(f: dataclasses.Field, tp, v) -> str | None:
  """What field f allows, when v breaks its type or rule; None when v holds them."""
  rule, allowed = f.metadata["rule"], f.metadata["allowed"] or TYPE_WORDS.get(tp, str(tp))
  ok = type_ok(tp, v)
  if ok and rule is not None:
    try:
      ok = bool(rule(v))
    except TypeError:
      ok = False
  return None if ok else allowed


def field_errors(cls, values: dict) -> Iterator[str]:
  prefix = f"{cls.NAME}." if cls.NAME else ""
  for f, tp in fields(cls):
    allowed = problem(f, tp, values[f.name])
    if allowed is not None:
      yield line(prefix + f.name, values[f.name], allowed)


def group_values(cls, node) -> dict:
  """A group's values from a ConfigDict node (tuples for JSON's lists)."""
  out = {}
  for f, tp in fields(cls):
    v = node[f.name]
    out[f.name] = tuple(v) if typing.get_origin(tp) is tuple and isinstance(v, list) else v
  return out




def config_node(cls) -> ml_collections.ConfigDict:
  """A group's defaults as a ConfigDict, typed so `--config.a.b=v` parses v as the field's type
  (an optional field is a typed FieldReference)."""
  out = ml_collections.ConfigDict()
  for f, tp in fields(cls):
    if f.default is None:
      args = [a for a in typing.get_args(tp) if a is not type(None)]
      out[f.name] = ml_collections.FieldReference(None, field_type=args[0])
    else:
      out[f.name] = f.default
  return out


def help_lines(cls) -> dict[str, str]:
  """'group.name' -> the field's help (and its allowed values when the help does not say them)."""
  prefix = f"{cls.NAME}." if cls.NAME else ""
  out = {}
  for f, _ in fields(cls):
    allowed, text = f.metadata["allowed"], f.metadata["help"]
    shown = allowed and not all(a in text for a in allowed.split(" | "))
    out[prefix + f.name] = text + (f" [{allowed}]" if shown else "")
  return out
