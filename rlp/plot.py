"""Curves of one or several runs (RLP, CPT, RPT) in one PNG, from their metrics.jsonl."""

from __future__ import annotations

import os

from rlp.metrics import read_metrics

PANELS = (
    ("information gain (reward)", ("rlp/reward_mean",)),
    ("S_pred vs S_ema", ("rlp/s_pred_mean", "rlp/s_ema_mean")),
    ("thought length", ("rlp/thought_len_mean",)),
    ("truncated fraction", ("rlp/truncated_frac",)),
    ("loss (format warm-up: its next-token NLL)", ("loss", "cpt/nll", "warmup/nll")),
    ("policy entropy", ("rlp/entropy",)),
    ("held-out gain: over no thought, over placebo thoughts\n(band: 95% interval over documents)",
     ("eval/information_gain", "eval/gain_over_placebo/empty", "eval/gain_over_placebo/other_doc")),
    ("held-out next-token accuracy", ("eval/next_token_acc_thought", "eval/next_token_acc_plain")),
    ("pass@1 vs pass@k (narrowing: pass@1 up, pass@k flat or down)",
     "reasoning/pass@"),
)


def _keys(keys, runs) -> tuple[str, ...]:
  """A panel's metrics: a tuple as given, or a prefix: every such metric logged, pass@k by k."""
  if not isinstance(keys, str):
    return keys
  found = {k for _, rows in runs for r in rows for k in r if k.startswith(keys)}
  return tuple(sorted(found, key=lambda k: (not k[len(keys):].isdigit(),
                                            int(k[len(keys):]) if k[len(keys):].isdigit() else 0,
                                            k)))


class PlotError(ValueError):
  pass


def plot_runs(workdirs: list[str], out: str, labels: list[str] | None = None) -> str:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  runs = []
  for i, wd in enumerate(workdirs):
    rows = read_metrics(wd)
    if not rows:
      raise PlotError(f"{wd} has no metrics.jsonl (or it is empty); is it a run's workdir?")
    runs.append(((labels or [])[i] if labels and i < len(labels) else
                 os.path.basename(os.path.normpath(wd)), rows))
  fig, axes = plt.subplots(3, 3, figsize=(16, 11))
  for ax, (title, keys) in zip(axes.ravel(), PANELS):
    keys = _keys(keys, runs)
    short = [k.split("/")[-1] for k in keys]
    short = short if len(set(short)) == len(short) else list(keys)  # e.g. cpt/nll, warmup/nll
    drawn = False
    for i, (label, rows) in enumerate(runs):
      for j, key in enumerate(keys):
        pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
        if pts:
          xs, ys = zip(*pts)
          # one colour per metric (per run when a panel has one metric), one line style per run
          color = f"C{j if len(keys) > 1 else i}"
          ax.plot(xs, ys, marker="." if len(xs) < 30 else None, color=color,
                  ls=("-", "--", ":", "-.")[i % 4],
                  label=(f"{label}: {short[j]}" if len(keys) > 1 or len(runs) > 1
                         else label))
          band = [(r["step"], *r[key + "_ci"]) for r in rows
                  if isinstance(r.get(key + "_ci"), list) and None not in r[key + "_ci"]]
          if band:
            bx, lo, hi = zip(*band)
            ax.fill_between(bx, lo, hi, color=color, alpha=0.15, lw=0)
          drawn = True
    for label, rows in runs:  # the end of an in-run format warm-up; reference resets
      warm = [r["step"] for r in rows if r.get("warmup/nll") is not None]
      if warm:
        ax.axvline(max(warm), color="gray", lw=0.8, ls=":")
      for r in rows:
        if r.get("event/ref_reset"):
          ax.axvline(r["step"], color="red", lw=0.6, ls="--", alpha=0.6)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("step")
    if drawn:
      ax.legend(fontsize=6 if len(keys) * len(runs) > 4 else 7)
    else:
      ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes,
              color="gray")
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  fig.savefig(out, dpi=80)
  plt.close(fig)
  return out


def plot_pass_at_k(reports: list[str], out: str, labels: list[str] | None = None) -> str:
  """pass@k curves of several rlp-eval reports (e.g. base, CPT and RLP checkpoints) on one figure."""
  import json
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6, 4))
  for i, path in enumerate(reports):
    try:
      with open(path) as f:
        rep = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
      raise PlotError(f"{path} is not an rlp-eval report ({e})") from e
    pts = sorted((int(k.split("@")[1]), v) for k, v in rep.items()
                 if k.startswith("reasoning/pass@") and not k.endswith("greedy"))
    if not pts:
      raise PlotError(f"{path} has no reasoning/pass@k entries")
    label = labels[i] if labels and i < len(labels) else os.path.basename(path)
    ax.plot([k for k, _ in pts], [v for _, v in pts], marker="o", label=label)
  ax.set_xscale("log", base=2)
  ax.set_xlabel("k")
  ax.set_ylabel("pass@k")
  ax.set_title("pass@k (unbiased estimator)")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(out, dpi=80)
  plt.close(fig)
  return out
