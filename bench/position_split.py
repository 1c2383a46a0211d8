r"""Where does thinking help? Splits an `rlp-eval --per_position` report's positions by whether
their token lies inside a given phrase, and lists the most frequent target tokens.

  rlp-eval --model=WORKDIR --problems=0 --likelihood_source=reasoning:eval --likelihood_docs=32 \
      --per_position --out=report.json
  python -m bench.position_split report.json \
      --phrase=" Give the result as your final answer. Do not include units."

A position is inside the phrase when its token ends a prefix of the phrase and the text before it
(the record's context, 16 tokens) ends with the rest of that prefix. Prints the information gain
(mean over thoughts of S_pred - S_plain, averaged over positions) inside, outside and over all.
"""

import collections
import json
import sys

from absl import app
from absl import flags

flags.DEFINE_string("phrase", " Give the result as your final answer. Do not include units.",
                    "the text whose positions are counted apart (default: the instruction every "
                    "gsm_symbolic question ends with)")
flags.DEFINE_integer("top", 8, "how many of the most frequent target tokens to list",
                     lower_bound=0)
FLAGS = flags.FLAGS


def inside(record: dict, phrase: str) -> bool:
  """Whether the record's token is one of `phrase`'s, given the text before it."""
  target, text = record["target_text"], record["context"] + record["target_text"]
  return bool(target) and any(
      phrase[:j].endswith(target) and text.endswith(phrase[:j])
      for j in range(len(target), len(phrase) + 1))


def split(records: list[dict], phrase: str) -> dict:
  groups = {"all": records, "inside": [r for r in records if inside(r, phrase)]}
  groups["outside"] = [r for r in records if not inside(r, phrase)]
  return {name: {"positions": len(rs),
                 "information_gain": (sum(r["gain"] for r in rs) / len(rs)) if rs else None}
          for name, rs in groups.items()}


def main(argv):
  if len(argv) != 2:
    sys.exit("usage: python -m bench.position_split REPORT.json [--phrase=TEXT]")
  try:
    with open(argv[1]) as f:
      report = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    sys.exit(f"position_split: cannot read {argv[1]} as a JSON report ({e})")
  records = report.get("per_position")
  if not records:
    sys.exit(f"position_split: {argv[1]} has no per-position records; run rlp-eval with "
             "--per_position")
  for name, row in split(records, FLAGS.phrase).items():
    gain = "-" if row["information_gain"] is None else f"{row['information_gain']:+.2f}"
    print(f"{name:8s} positions {row['positions']:4d}  information gain {gain}")
  counts = collections.Counter(r["target_text"] for r in records)
  print("most frequent targets:", ", ".join(f"{t!r} {n}" for t, n in counts.most_common(FLAGS.top)))


if __name__ == "__main__":
  app.run(main)
