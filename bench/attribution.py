"""What the main job's held-out gain is made of: the paper's objective alone, the scorer term alone,
both (the recipe) and CPT, each configs/smollm2_rlp.py for its 60 steps, over seeds; then every
run and SmolLM2 as shipped scored at the same positions against placebo thoughts, and the curves
of the in-run evals (fixed positions, the model the runs started from chose them).

  python -m bench.attribution --out=workdirs/attribution [--seeds=0,1]

Writes OUT/<variant>_s<seed>/ (the runs; an existing finished run is reused), OUT/<corpus>_<positions>
.json/.md (`rlp-eval compare`: reasoning:eval, 32 documents, and bench/ood_english_24.jsonl, 24;
positions: the 2 tokens per document SmolLM2 as shipped finds least likely, and 2 uniform ones,
seed 0) and OUT/curves.png. About 7 min a run and 10 min a comparison on 2 CPU cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from absl import app, flags

flags.DEFINE_string("out", "workdirs/attribution", "directory for the runs, tables and figure")
flags.DEFINE_list("seeds", ["0", "1"], "training seeds")
flags.DEFINE_bool("curves_only", False, "only draw the curves of existing runs")
FLAGS = flags.FLAGS

VARIANTS = {  # name: (label, config overrides)
    "paper": ("the paper's objective (scorer_weight 0)", {"rlp.scorer_weight": 0.0}),
    "scorer": ("the scorer term alone (policy_weight 0)", {"rlp.policy_weight": 0.0}),
    "recipe": ("the recipe (both)", {}),
    "cpt": ("CPT", {"objective": "cpt"}),
}
CORPORA = {"reasoning": ("reasoning:eval", 32), "english": ("jsonl:bench/ood_english_24.jsonl", 24)}
POSITIONS = {"hard": ["--selection=low_logp", "--select_with=smollm2"],
             "uniform": ["--selection=uniform"]}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def train(out, seeds):
  from configs import smollm2_rlp
  from rlp import loop
  for seed in seeds:
    for name, (_, over) in VARIANTS.items():
      c = smollm2_rlp.get_config()
      c.seed = seed
      c.train.progress = False
      c.update_from_flattened_dict(over)
      loop.train(c, os.path.join(out, f"{name}_s{seed}"), log=lambda m: None)


def compare(out, seeds):
  runs = [os.path.join(out, f"{n}_s{s}") for s in seeds for n in VARIANTS]
  for corpus, (source, n) in CORPORA.items():
    for pos, flags_ in POSITIONS.items():
      path = os.path.join(out, f"{corpus}_{pos}.json")
      if os.path.exists(path):
        continue
      subprocess.run([sys.executable, "-m", "launch.evaluate", "compare", "smollm2", *runs,
                      f"--likelihood_source={source}", f"--likelihood_docs={n}", "--positions=2",
                      *flags_, "--seed=0", f"--out={path}"], cwd=ROOT, check=True)


def curves(out, seeds, path):
  """The in-run evals (8 held-out documents x 2 positions fixed at the start): gain over no
  thought and over the empty and one-token placebos, 95% bands, one line per run."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from rlp import metrics
  keys = (("eval/information_gain", "gain over no thought"),
          ("eval/gain_over_placebo/empty", "gain over the empty thought"),
          ("eval/gain_over_placebo/one_token", "gain over the one-token thought"))
  fig, axes = plt.subplots(1, 3, figsize=(17, 4), sharey=True)
  for vi, (name, (label, _)) in enumerate(VARIANTS.items()):
    for si, seed in enumerate(seeds):
      rows = [r for r in metrics.read_metrics(os.path.join(out, f"{name}_s{seed}"))
              if "eval/information_gain" in r]
      xs = [r["step"] for r in rows]
      for ax, (key, _) in zip(axes, keys):
        ax.plot(xs, [r[key] for r in rows], color=f"C{vi}", ls=("-", "--")[si % 2],
                label=f"{label}, seed {seed}")
        ax.fill_between(xs, [r[key + "_ci"][0] for r in rows], [r[key + "_ci"][1] for r in rows],
                        color=f"C{vi}", alpha=0.08)
  for ax, (_, title) in zip(axes, keys):
    ax.axhline(0, color="gray", lw=0.8)
    ax.set_title(f"{title}, nats (band: 95% interval)", fontsize=10)
    ax.set_xlabel("step")
  axes[0].legend(fontsize=7)
  fig.suptitle("SmolLM2-135M, held-out in-run eval: 8 reasoning documents x the 2 positions "
               "SmolLM2 as shipped finds least likely (the same for every run and step)",
               fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  return path


def main(argv):
  del argv
  from absl import logging
  logging.set_verbosity(logging.WARNING)
  seeds = [int(s) for s in FLAGS.seeds]
  os.makedirs(FLAGS.out, exist_ok=True)
  if not FLAGS.curves_only:
    train(FLAGS.out, seeds)
    compare(FLAGS.out, seeds)
  print(json.dumps({"curves": curves(FLAGS.out, seeds, os.path.join(FLAGS.out, "curves.png"))}))


if __name__ == "__main__":
  app.run(main)
