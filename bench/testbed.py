"""The testbed's experiments, over seeds: RLP and its controls at matched steps from one warm-up,
and (toy_reasoning) the thought-length / group-size ablations. Prints one JSON line per run and a
summary, and draws the figure docs/recipe.md shows.

  python -m bench.testbed --out=workdirs/testbed [--seeds=0,1,2] [--ablations]
  python -m bench.testbed --config=toy_discovery --out=workdirs/discovery [--seeds=0,1,2]

Each seed runs the format warm-up once as its own run (the same batches the in-run warm-up
sees), then every variant starts from that checkpoint, so variants of one seed differ only in
what they vary: toy_reasoning RLP and CPT; toy_discovery RLP, placebo RL (rewards shuffled), the
warm-up continued (next-token steps on its own documents) and CPT. Reported per run: the
held-out thought eval at the answer positions of the first and last evaluation (information gain,
gain over the empty and other-document placebo thoughts with 95% intervals, accuracy with and
without a thought), the tokens trained on after the warm-up, and the seconds the run took.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
from absl import app, flags

flags.DEFINE_string("out", "workdirs/testbed", "directory for the runs, results.jsonl and figure")
flags.DEFINE_enum("config", "toy_reasoning", ["toy_reasoning", "toy_discovery"], "the testbed config")
flags.DEFINE_list("seeds", ["0", "1", "2"], "seeds")
flags.DEFINE_bool("ablations", False, "also the thought-length and group-size sweeps")
flags.DEFINE_integer("steps", None, "RLP / CPT steps after the warm-up (default: the config's)")
FLAGS = flags.FLAGS

THOUGHT_LENS = (2, 4, 8, 12)
GROUPS = (2, 4, 8)
KEYS = ("eval/information_gain", "eval/next_token_acc_thought", "eval/next_token_acc_plain",
        "eval/s_pred_mean", "eval/s_plain_mean", "eval/gain_over_placebo/empty",
        "eval/gain_over_placebo/other_doc")
INTERVALS = ("eval/information_gain_ci", "eval/gain_over_placebo/empty_ci",
             "eval/gain_over_placebo/other_doc_ci")


def variants(name: str) -> dict:
  """The runs of each seed after its warm-up, by name: their config overrides."""
  if name == "toy_reasoning":
    return {"rlp": {}, "cpt": {"objective": "cpt"}}
  from configs import toy_discovery
  return {"rlp": {}, "placebo_rl": {"rlp.shuffle_rewards": True},
          "warmup_continued": {"objective": "cpt", "data.source": toy_discovery.WARMUP_SOURCE},
          "cpt": {"objective": "cpt"}}


def config(seed, name="toy_reasoning", **overrides):
  """configs/<name>.py for one seed, quiet, on one device, with dotted-key overrides."""
  import importlib
  c = importlib.import_module(f"configs.{name}").get_config()
  c.seed = seed
  c.train.progress = False
  c.train.sample_every = 0
  c.train.plot = False
  c.mesh.data = 1
  c.update_from_flattened_dict(overrides)
  return c


def warmup_run(seed, out, name="toy_reasoning", **overrides):
  """The config's format warm-up as a run of its own (objective=cpt on warmup.source)."""
  from rlp import loop
  w = config(seed, name, **overrides).warmup
  wc = config(seed, name, **{**overrides, "objective": "cpt", "data.source": w.source, "optim.lr": w.lr,
                       "optim.warmup_steps": max(1, w.steps // 10), "train.steps": w.steps,
                       "train.checkpoint_every": w.steps, "train.eval_every": 0,
                       "warmup.steps": 0})
  wd = os.path.join(out, f"seed{seed}", "warmup")
  res = loop.train(wc, wd, log=lambda m: None) or {}
  return wd, res


def variant_run(seed, name, warm_wd, out, config_name="toy_reasoning", **overrides):
  from rlp import loop, metrics
  c = config(seed, config_name, **{"model.init": "checkpoint", "model.path": warm_wd,
                                   "warmup.steps": 0, **overrides})
  wd = os.path.join(out, f"seed{seed}", name)
  t0 = time.time()
  loop.train(c, wd, log=lambda m: None)
  rows = metrics.read_metrics(wd)
  evals = [r for r in rows if "eval/information_gain" in r]
  train = [r for r in rows if "loss" in r]
  keys = KEYS + INTERVALS
  row = {"seed": seed, "run": name, **overrides, "seconds": round(time.time() - t0, 1),
         "tokens": float(sum(r.get("tokens", 0) + r.get("thought_tokens", 0) for r in train)),
         "start": {k: evals[0].get(k) for k in keys} if evals else {},
         **{k: evals[-1].get(k) for k in keys}}
  print(json.dumps(row), flush=True)
  return row


def summarize(rows):
  out = {}
  for name in sorted({r["run"] for r in rows}):
    rs = [r for r in rows if r["run"] == name]
    out[name] = {k: {"mean": float(np.mean([r[k] for r in rs])),
                     "min": float(np.min([r[k] for r in rs])),
                     "max": float(np.max([r[k] for r in rs]))} for k in KEYS
                 if all(r.get(k) is not None for r in rs)}
    out[name]["seeds"] = len(rs)
  return out


def figure(rows, out, path):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from rlp import metrics
  fig, axes = plt.subplots(1, 3, figsize=(15, 4))
  ax = axes[0]
  for r in rows:
    if r["run"] not in ("rlp", "cpt"):
      continue
    evals = [e for e in metrics.read_metrics(os.path.join(out, f"seed{r['seed']}", r["run"]))
             if "eval/information_gain" in e]
    ax.plot([e["step"] for e in evals], [e["eval/information_gain"] for e in evals],
            color="C0" if r["run"] == "rlp" else "C1", alpha=0.8,
            label=f"{r['run'].upper()}" if r["seed"] == rows[0]["seed"] else None)
  ax.set_title("held-out information gain at the answers\n(after the warm-up; one line per seed)")
  ax.set_xlabel("step after the warm-up")
  ax.set_ylabel("nats")
  ax.legend()
  base = config(0).rlp
  for ax, (key, values, label) in zip(axes[1:], [("max_thought_len", THOUGHT_LENS,
                                                  "max thought length (8 tokens finish the sum)"),
                                                 ("group_size", GROUPS, "group size G")]):
    pts = [(v, [r["eval/information_gain"] for r in rows if r.get(f"rlp.{key}") == v
                or (r["run"] == "rlp" and v == base[key])]) for v in values]
    pts = [(v, ys) for v, ys in pts if ys]
    if not pts:
      ax.text(0.5, 0.5, "not run (--ablations)", ha="center", transform=ax.transAxes)
      continue
    for v, ys in pts:
      ax.scatter([v] * len(ys), ys, color="gray", s=12)
    ax.plot([v for v, _ in pts], [np.mean(ys) for _, ys in pts], marker="o")
    ax.set_xscale("log", base=2)
    ax.set_xlabel(label)
    ax.set_title("final held-out information gain (dots: seeds)")
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  return path


def discovery_figure(rows, out, path):
  """Accuracy with a thought, the gain over no thought and the gain over the empty-thought
  placebo (95% bands) over the steps after the warm-up, one line per run and seed."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from rlp import metrics
  names = list(dict.fromkeys(r["run"] for r in rows))
  fig, axes = plt.subplots(1, 3, figsize=(17, 4))
  panels = ((None, "answer accuracy with a thought\n(held-out: 32 documents x 2 answers)"),
            ("eval/information_gain", "gain over no thought, nats (band: 95% interval)"),
            ("eval/gain_over_placebo/empty", "gain over the empty-thought placebo, nats\n"
             "(an empty thought is unlike any the model saw)"))
  for r in rows:
    evals = [e for e in metrics.read_metrics(os.path.join(out, f"seed{r['seed']}", r["run"]))
             if "eval/information_gain" in e]
    color = f"C{names.index(r['run'])}"
    label = r["run"] if r["seed"] == rows[0]["seed"] else None
    xs = [e["step"] for e in evals]
    for ax, (key, _) in zip(axes, panels):
      if key is None:
        ax.plot(xs, [e["eval/next_token_acc_thought"] for e in evals], color=color, label=label)
        continue
      ax.plot(xs, [e[key] for e in evals], color=color, label=label)
      band = [e[key + "_ci"] for e in evals]
      ax.fill_between(xs, [b[0] for b in band], [b[1] for b in band], color=color, alpha=0.12)
  for ax, (_, title) in zip(axes, panels):
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("step after the warm-up")
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  return path


def run_all(out, seeds, ablations=False, thought_lens=THOUGHT_LENS, groups=GROUPS,
            config_name="toy_reasoning", **overrides):
  """Every run of the testbed for these seeds; returns the rows (also written to results.jsonl).
  overrides apply to every run (e.g. fewer steps in a notebook's reduced form)."""
  os.makedirs(out, exist_ok=True)
  base = config(0, config_name, **overrides).rlp
  rows = []
  for seed in seeds:
    warm_wd, _ = warmup_run(seed, out, config_name, **overrides)
    for name, extra in variants(config_name).items():
      rows.append(variant_run(seed, name, warm_wd, out, config_name, **{**overrides, **extra}))
    if ablations:
      for t in thought_lens:
        if t != base.max_thought_len:
          rows.append(variant_run(seed, f"T{t}", warm_wd, out, config_name,
                                  **{**overrides, "rlp.max_thought_len": t}))
      for g in groups:
        if g != base.group_size:
          rows.append(variant_run(seed, f"G{g}", warm_wd, out, config_name,
                                  **{**overrides, "rlp.group_size": g}))
  with open(os.path.join(out, "results.jsonl"), "w") as f:
    for r in rows:
      f.write(json.dumps(r) + "\n")
  return rows


def main(argv):
  del argv
  from absl import logging
  logging.set_verbosity(logging.WARNING)
  extra = {"train.steps": FLAGS.steps} if FLAGS.steps else {}
  rows = run_all(FLAGS.out, [int(s) for s in FLAGS.seeds], FLAGS.ablations,
                 config_name=FLAGS.config, **extra)
  print(json.dumps({"summary": summarize(rows)}))
  draw = figure if FLAGS.config == "toy_reasoning" else discovery_figure
  print(draw(rows, FLAGS.out, os.path.join(FLAGS.out, f"{FLAGS.config}.png")))


if __name__ == "__main__":
  app.run(main)
