"""Answers and samples: the unbiased pass@k estimator, final-answer extraction from a worked
solution, problem files and few-shot prompts, and the diversity of a set of samples."""

from __future__ import annotations

import json
import math
import re
from typing import Sequence

import numpy as np


class EvalError(ValueError):
  """Bad evaluation input (a problem file, k larger than the samples): names it and the fix."""


def pass_at_k(n: int, c: int, k: int) -> float:
  """Unbiased pass@k = 1 - C(n - c, k) / C(n, k) for n samples of which c are correct."""
  if not 0 <= c <= n or k < 1:
    raise EvalError(f"pass_at_k needs 0 <= c <= n and k >= 1 (got n={n}, c={c}, k={k})")
  if k > n:
    raise EvalError(f"pass@{k} needs at least {k} samples (got n={n})")
  if n - c < k:
    return 1.0
  return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


# A number, with a sign only when the minus is attached to it and not part of an expression
# ("12 - 4" and "12-4" are not -4).
_NUM = r"(?:(?<![\w)\]])-)?(?:\$\s?)?\d[\d,]*(?:\.\d+)?|(?:(?<![\w)\]])-)?\.\d+"


def _clean_number(s: str) -> str | None:
  s = s.replace("$", "").replace(",", "").replace(" ", "").rstrip(".")
  try:
    v = float(s)
  except ValueError:
    return None
  if math.isfinite(v) and v == int(v):
    return str(int(v))
  return repr(v)


def extract_answer(text: str, fallback: bool = False) -> str | None:
  """The final answer of a solution in an explicit form: `#### N`, then `\\boxed{N}`, then "the
  (final) answer is N". With fallback=True, else the last number in the text (reported apart:
  it credits a model that writes numbers at random)."""
  m = re.search(r"####\s*(" + _NUM + ")", text)
  if m:
    return _clean_number(m.group(1))
  m = re.findall(r"\\boxed\{\s*(" + _NUM + r")\s*\}", text)
  if m:
    return _clean_number(m[-1])
  m = re.findall(r"answer is[:\s]*(" + _NUM + ")", text, flags=re.IGNORECASE)
  if m:
    return _clean_number(m[-1])
  if not fallback:
    return None
  nums = re.findall(_NUM, text)
  for n in reversed(nums):
    v = _clean_number(n)
    if v is not None:
      return v
  return None


def answers_match(pred: str | None, gold: str) -> bool:
  """Whether an extracted answer equals the gold one: as mathematics (math-verify: 1/2 = 0.5,
  1,000 = 1000, \\frac{1}{2} = 0.5) when math-verify is installed, else as numbers."""
  if pred is None:
    return False
  try:
    from math_verify import parse, verify
  except ImportError:
    verify = None
  if verify is not None:
    gp, pp = parse(str(gold)), parse(str(pred))
    if gp and pp:
      return bool(verify(gp, pp))
  g = _clean_number(str(gold))
  try:
    return g is not None and abs(float(pred) - float(g)) <= 1e-6 * max(1.0, abs(float(g)))
  except ValueError:
    return False


def check_answer(text: str, gold: str, fallback: bool = False) -> tuple[bool, str]:
  """(correct, rule) for a completion: its explicit final answer (extract_answer: #### N,
  \\boxed{N}, "the answer is N"; also a non-numeric \\boxed{...}, e.g. a fraction) compared with
  answers_match, rule "explicit"; with fallback=True and no explicit answer, the last number,
  rule "last_number"; else (False, "none")."""
  pred = extract_answer(text)
  if pred is None:
    boxed = re.findall(r"\\boxed\{((?:[^{}]|\{[^{}]*\})+)\}", text)
    pred = boxed[-1] if boxed else None
  if pred is not None:
    return answers_match(pred, gold), "explicit"
  if fallback:
    last = extract_answer(text, fallback=True)
    if last is not None:
      return answers_match(last, gold), "last_number"
  return False, "none"


def load_problems(path: str) -> list[dict]:
  """A JSONL of {"question": ..., "answer": ...}; a bad line is named in the error."""
  out = []
  with open(path, encoding="utf-8") as f:
    for i, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        obj = json.loads(line)
      except json.JSONDecodeError as e:
        raise EvalError(f"{path}:{i} is not valid JSON ({e.msg})") from e
      for key in ("question", "answer"):
        if not isinstance(obj, dict) or key not in obj:
          raise EvalError(f"{path}:{i} has no {key!r} field (each line needs question and answer)")
      out.append({"question": str(obj["question"]), "answer": str(obj["answer"])})
  if not out:
    raise EvalError(f"{path} holds no problems")
  return out


def few_shot_prompt(question: str, shots: Sequence[dict]) -> str:
  parts = [f"Question: {s['question']}\nAnswer: {s['solution'].strip()}\n\n" for s in shots]
  return "".join(parts) + f"Question: {question}\nAnswer:"


# ---------------------------------------------------------------- diversity
def distinct_n(samples: Sequence[Sequence[int]], n: int) -> float:
  grams = [tuple(s[i:i + n]) for s in samples for i in range(len(s) - n + 1)]
  return len(set(grams)) / len(grams) if grams else 0.0


def _edit(a, b) -> int:
  prev = list(range(len(b) + 1))
  for i, x in enumerate(a, 1):
    cur = [i]
    for j, y in enumerate(b, 1):
      cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
    prev = cur
  return prev[-1]


def mean_pairwise_edit(samples: Sequence[Sequence[int]]) -> float:
  """Mean token-level edit distance over pairs, normalised by the longer sample."""
  pairs = [(a, b) for i, a in enumerate(samples) for b in samples[i + 1:]]
  if not pairs:
    return 0.0
  return float(np.mean([_edit(a, b) / max(len(a), len(b), 1) for a, b in pairs]))


def unigram_entropy(samples: Sequence[Sequence[int]]) -> float:
  toks = [t for s in samples for t in s]
  if not toks:
    return 0.0
  _, counts = np.unique(np.asarray(toks), return_counts=True)
  p = counts / counts.sum()
  return float(-(p * np.log(p)).sum())
