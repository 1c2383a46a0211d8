"""rlp-eval --model=PATH [--likelihood_source=SOURCE] [--jsonl=problems.jsonl] [--out=report.json]
rlp-eval compare PATH_A PATH_B ... [--likelihood_source=SOURCE] [--out=table.json]
rlp-eval harness --model=PATH [--tasks=NAMES] [--include_path=DIR] [--num_fewshot=N] [--limit=N]
                 [--batch_size=N] [--output_path=DIR] [--think]
rlp-eval table PATH_A PATH_B ... [--tasks=NAMES] [--output_path=DIR]

PATH: a GGUF file, an HF directory, a training run's workdir (newest checkpoint), or "smollm2".
Writes one JSON report: held-out NLL, the thought eval (S_pred with a thought, S_plain without,
their difference "information gain", and the gain over placebo thoughts at the same positions:
empty, one token, random tokens of the real thought's length, another document's thought; each
with a 95% bootstrap interval over documents), next-token accuracy with and without a thought,
greedy pass@1, sampled pass@k and diversity. --per_position adds one record per position.

Positions are chosen once, independently of the model being evaluated unless asked otherwise:
uniform / marker selections are drawn with --seed; entropy / low_logp are scored by
--select_with (default: for a run's workdir the model the run started from, so a run and its
CPT twin are scored at the same positions; for a model file the model itself, which the report
flags). --positions_from=REPORT reuses the positions saved in an earlier report. `compare`
scores every model at one set of positions and prints a table (S_plain, S_pred, gain and gain
over each placebo with intervals, accuracies, all-token NLL, and each model's best mode against
the first model's).

harness runs lm-evaluation-harness tasks on the model through this project's backend (rlp/harness.py;
the harness's own flag names, its results table and results JSON); the offline tasks
rlp_gsm_symbolic (generation), rlp_gsm_symbolic_mc and rlp_digit_sums_mc are always available,
other tasks by name (with internet) or from --include_path. Without --tasks: on CPU the offline
suite (those three, 100 problems each: about 9 minutes for SmolLM2 on 2 CPU cores), on an
accelerator the paper's benchmarks (--tasks=paper: gsm8k, minerva_math500, minerva_math, aime25,
mmlu, mmlu_pro, gpqa_diamond_n_shot; greedy, one answer each). --think lets the model write a
thought before it answers. table runs the same tasks (and the all-token held-out NLL) for every
model and writes a markdown table and a bar chart with 95% intervals.

The thought eval uses, for a run's workdir, the run's own thought format, sampler settings and
position selection (each can be overridden by a flag); for a GGUF / HF model the flags' defaults.
--likelihood_source takes any data source the trainer takes (jsonl:FILE with a "text" field,
text:FILE, reasoning:eval, toy:eval, arrayrecord:DIR, ...); default: the run's data.eval_source,
else reasoning:eval.
"""

import dataclasses
import importlib.util
import json
import os
import sys

import numpy as np

from absl import flags

from launch import cli

flags.DEFINE_string("model", "smollm2", "GGUF file, HF directory, run workdir or 'smollm2'")
flags.DEFINE_string("jsonl", None, "problems as JSONL {question, answer}; default: the shipped "
                    "held-out gsm_symbolic split")
flags.DEFINE_integer("problems", 8, "number of problems (0 skips the reasoning eval)",
                     lower_bound=0)
flags.DEFINE_integer("samples", 4, "sampled answers per problem (n of pass@k)", lower_bound=1)
flags.DEFINE_list("k", ["1", "2", "4"], "k values for pass@k (<= samples)")
flags.DEFINE_integer("shots", 2, "few-shot examples from the training split", lower_bound=0)
flags.DEFINE_integer("max_new_tokens", 160, "answer length", lower_bound=1)
flags.DEFINE_float("temperature", 0.7, "sampling temperature for pass@k", lower_bound=0.0)
flags.DEFINE_string("likelihood_source", None, "documents for the likelihood metrics: any data "
                    "source the trainer accepts (default: the run's data.eval_source, else "
                    "reasoning:eval)")
flags.DEFINE_integer("likelihood_docs", 8, "held-out documents for the likelihood metrics",
                     lower_bound=1)
flags.DEFINE_integer("seq_len", None, "context length for the likelihood metrics (default: the "
                     "run's data.seq_len, else 256)")
flags.DEFINE_integer("positions", None, "target positions per document for the thought eval "
                     "(default: the run's train.eval_positions, else 4)", lower_bound=1)
flags.DEFINE_integer("group", None, "thoughts per position (default: the run's, else 4)")
flags.DEFINE_integer("thought_len", None, "max thought length (default: the run's, else 24)")
flags.DEFINE_float("thought_temperature", None, "thought sampling temperature (default: the "
                   "run's, else 0.7)")
flags.DEFINE_string("template", None, "text forced before <think> (default: the run's, else '')")
flags.DEFINE_string("selection", None, "uniform | marker | entropy | low_logp (default: the "
                    "run's data.selection, else uniform)")
flags.DEFINE_string("position_marker", None, "with selection=marker: the text after which "
                    "targets sit (default: the run's)")
flags.DEFINE_integer("min_prefix", None, "smallest target position (default: the run's, else 8)")
flags.DEFINE_integer("seed", 0, "seed of the positions and thoughts")
flags.DEFINE_bool("per_position", False, "also write one record per thought-eval position to the "
                  "report (\"per_position\": document, position, x_t and the 16 tokens before it "
                  "as text, S_plain, each thought's S_pred and each placebo's, gain)")
flags.DEFINE_string("select_with", "", "with selection entropy / low_logp: the model whose no-thought "
                    "predictions choose the positions (a model path as --model takes); default: "
                    "for a run's workdir the model the run started from, else the model itself")
flags.DEFINE_string("positions_from", None, "an earlier rlp-eval report (or compare JSON) whose "
                    "positions this eval reuses (the same --likelihood_source and documents)")
flags.DEFINE_list("placebos", ["empty", "one_token", "random", "other_doc"], "placebo thoughts "
                  "scored at the same positions (or none)")
flags.DEFINE_bool("use_ema", False, "evaluate a run's EMA params instead of its params")
flags.DEFINE_string("out", None, "report path (default: WORKDIR/eval/step-N.json for a run, "
                    "else ./eval_report.json; when that exists, the first free step-N-2.json, "
                    "step-N-3.json, ..., so repeated evals of a run keep every report)")
flags.DEFINE_bool("overwrite", False, "replace an existing report: the one named by --out, or "
                  "without --out the default step-N.json (eval_report.json)")
flags.DEFINE_bool("answer_fallback", False, "also score answers by the last number in the text "
                  "when no explicit form (#### N, \\boxed{N}, 'the answer is N') is found; "
                  "reported apart as reasoning_fallback/*")
flags.DEFINE_list("tasks", ["auto"], "harness / table: lm-evaluation-harness task names, or a "
                  "suite: offline (the local rlp_* tasks, 100 problems each unless --limit; about "
                  "9 min for SmolLM2 on 2 CPU cores), paper (gsm8k, minerva_math500, "
                  "minerva_math, aime25, mmlu, mmlu_pro, gpqa_diamond_n_shot; downloads their "
                  "data); auto = offline on CPU, paper on an accelerator")
flags.DEFINE_string("include_path", None, "harness / table: a directory of task YAML files")
flags.DEFINE_integer("num_fewshot", None, "harness / table: few-shot examples (default: the "
                     "task's)", lower_bound=0)
flags.DEFINE_float("limit", None, "harness / table: documents per task (a fraction if < 1; "
                   "default: every document, 100 for the offline suite)",
                   lower_bound=0)
flags.DEFINE_integer("batch_size", 8, "harness / table: sequences per batch", lower_bound=1)
flags.DEFINE_string("output_path", None, "harness / table: directory for the results JSON "
                    "(harness) or the table and chart (table)")
flags.DEFINE_bool("think", False, "harness / table: the model writes a thought (up to "
                  "--thought_len tokens, greedy) before each answer or scored continuation")
flags.DEFINE_string("wandb_project", "", "log the report's scalars to this Weights & Biases "
                    "project (\"\" = off; pip install -e '.[wandb]'; WANDB_MODE=offline logs "
                    "beside --out)")
FLAGS = flags.FLAGS


_FIELDS = (("group", "rlp.group_size"), ("thought_len", "rlp.max_thought_len"),
           ("thought_temperature", "rlp.temperature"), ("template", "rlp.template"),
           ("selection", "data.selection"), ("position_marker", "data.position_marker"),
           ("min_prefix", "data.min_prefix"), ("seq_len", "data.seq_len"),
           ("positions", "train.eval_positions"), (None, "rlp.min_thought_len"),
           (None, "rlp.top_k"), (None, "rlp.top_p"))


def thought_eval_config(run_config):
  """The thought eval's settings: the run's (or defaults for a GGUF/HF model), then the flags."""
  from configs import base
  from rlp import configuration
  c = base.get_config()
  c.rlp.max_thought_len, c.data.seq_len, c.train.eval_positions = 24, 256, 4
  for flag, field in _FIELDS:
    group, name = field.split(".")
    if run_config is not None and name in run_config.get(group, {}):
      c[group][name] = type(c[group][name])(run_config[group][name])
    if flag is not None and getattr(FLAGS, flag) is not None:
      c[group][name] = getattr(FLAGS, flag)
  c.rlp.min_thought_len = min(c.rlp.min_thought_len, c.rlp.max_thought_len)
  flagged = {field: flag for flag, field in _FIELDS
             if flag is not None and getattr(FLAGS, flag) is not None}
  bad = [f"--{flagged[field]}={value!r} is invalid: must be {allowed}"
         for field, value, ok, allowed in configuration.checks(c)
         if not ok and field in flagged and field != "rlp.group_size"]
  if c.rlp.group_size < 1:  # one thought per position is enough for the information gain
    bad.append(f"--group={c.rlp.group_size} is invalid: must be >= 1")
  if c.data.seq_len < c.data.min_prefix + 2:
    bad.append(f"--seq_len={c.data.seq_len} is invalid: must be >= min_prefix + 2 "
               f"({c.data.min_prefix + 2}), so a document has a target position")
  if bad:
    raise configuration.ConfigError("; ".join(bad))
  if c.data.selection not in configuration.SELECTIONS or (c.data.selection == "marker"
                                                          and not c.data.position_marker):
    raise configuration.ConfigError(f"--selection must be one of {configuration.SELECTIONS} (got "
                                    f"{c.data.selection!r}), and marker needs --position_marker")
  return c


def _selection(c, tok):
  from rlp import configuration, thought_eval
  return thought_eval.Selection(kind=c.data.selection, per_doc=max(1, c.train.eval_positions),
                                min_prefix=c.data.min_prefix,
                                marker_ids=configuration.marker_ids(c, tok), seed=FLAGS.seed)


def _placebos() -> tuple[str, ...]:
  from rlp import thought_eval
  names = tuple(p for p in FLAGS.placebos if p and p != "none")
  bad = [p for p in names if p not in thought_eval.PLACEBOS]
  if bad:
    raise thought_eval.EvalError(f"--placebos: unknown {bad}; use any of "
                                 f"{','.join(thought_eval.PLACEBOS)} (or none)")
  return names


def eval_positions(c, tok, docs, source, model, desc, run_config, self_name=None):
  """The positions of this eval: --positions_from's, or chosen by the selection (scored ones by
  --select_with, else the run's starting model, else the model itself)."""
  from rlp import evaluate, thought_eval
  from rlp.thought_format import thought_format
  if FLAGS.positions_from:
    try:
      with open(FLAGS.positions_from) as f:
        saved = json.load(f)
    except (OSError, ValueError) as e:
      raise thought_eval.EvalError(f"--positions_from={FLAGS.positions_from} cannot be read as "
                                   f"an rlp-eval report ({e})") from None
    if saved.get("likelihood_source") not in (None, source):
      raise thought_eval.EvalError(
          f"--positions_from={FLAGS.positions_from} holds positions in "
          f"{saved['likelihood_source']!r}, not {source!r}; pass "
          f"--likelihood_source={saved['likelihood_source']}")
    at = thought_eval.EvalPositions.from_json(saved.get("positions") or {}, docs, c.data.seq_len,
                                              FLAGS.positions_from)
    return dataclasses.replace(at, selected_by=f"{at.selected_by}, from {FLAGS.positions_from}")
  sel = _selection(c, tok)
  scorer, name = None, None
  if sel.kind in ("entropy", "low_logp"):
    scorer, name = evaluate.selection_model(FLAGS.select_with, model, desc, run_config, tok,
                                            self_name)
  return thought_eval.choose(docs, c.data.seq_len, sel, scorer, name,
                             thought_format(tok, c.rlp.template).open_token,
                             batch_size=max(1, min(len(docs), 4)))


def _thought_report(model, tok, c, docs, at) -> dict:
  from rlp import configuration, thought_eval
  from rlp.thought_format import thought_format
  rep = thought_eval.thought_likelihood(
      model, docs, configuration.sampler_config(c, tok), c.data.seq_len, at, seed=FLAGS.seed,
      batch_size=max(1, min(len(docs), 4)),
      baseline_exclude=thought_format(tok, c.rlp.template).open_token, placebos=_placebos(),
      per_position=True)
  for rec in rep["per_position"]:
    doc = docs[rec["doc"]]
    rec["target_text"] = tok.decode([rec["target"]])
    rec["context"] = tok.decode([int(x) for x in doc[max(0, rec["t"] - 16):rec["t"]]])
  return rep


def _settings(c, at) -> dict:
  return {"group_size": c.rlp.group_size, "max_thought_len": c.rlp.max_thought_len,
          "temperature": c.rlp.temperature, "template": c.rlp.template,
          "selection": c.data.selection, "position_marker": c.data.position_marker,
          "positions_per_doc": c.train.eval_positions, "min_prefix": c.data.min_prefix,
          "seed": FLAGS.seed, "placebos": list(_placebos()), "positions": at.selected_by}


def _documents(tok, source):
  from rlp import data
  docs_ds, _ = data.open_documents(source, tok, num_docs=FLAGS.likelihood_docs)
  return [docs_ds[i] for i in range(min(len(docs_ds), FLAGS.likelihood_docs))]


def _source(run_config) -> str:
  return FLAGS.likelihood_source or (run_config.data.eval_source if run_config is not None
                                     and run_config.data.eval_source else "reasoning:eval")


def main(argv):
  from absl import logging
  logging.set_verbosity(logging.WARNING)
  if len(argv) > 1 and argv[1] == "compare":
    return compare(argv[2:])
  if len(argv) > 1 and argv[1] == "harness":
    if len(argv) > 2:
      cli.die("rlp-eval", f"unexpected arguments {argv[2:]}; rlp-eval harness --model=PATH "
              "--tasks=NAMES")
    return harness_cmd()
  if len(argv) > 1 and argv[1] == "table":
    return table_cmd(argv[2:])
  from rlp import corpora, evaluate
  if len(argv) > 1:
    cli.die("rlp-eval", f"unexpected arguments {argv[1:]}; flags are written --name=value "
            "(or: rlp-eval compare PATH_A PATH_B ...)")
  try:
    ks = [int(k) for k in FLAGS.k]
  except ValueError:
    ks = []
  if not ks or any(k < 1 or k > FLAGS.samples for k in ks):
    cli.die("rlp-eval", f"--k={','.join(FLAGS.k)}: pass@k needs integers 1 <= k <= --samples "
            f"({FLAGS.samples})")
  _placebos()
  if FLAGS.wandb_project and importlib.util.find_spec("wandb") is None:
    cli.die("rlp-eval", f"--wandb_project={FLAGS.wandb_project}: wandb is not installed; "
            "pip install -e '.[wandb]', or leave the flag out")
  model, tok, desc = evaluate.load_for_eval(FLAGS.model, FLAGS.use_ema)
  run_config = desc.pop("config", None)
  out = FLAGS.out or evaluate.default_report_path(FLAGS.model, desc, FLAGS.overwrite)
  if os.path.exists(out) and not FLAGS.overwrite:
    raise evaluate.EvalError(f"{out} exists; pass --overwrite or another --out")
  c = thought_eval_config(run_config)
  source = _source(run_config)
  report = {"model": desc, "likelihood_source": source}
  docs = _documents(tok, source)
  from flax import nnx
  graphdef, params = nnx.split(model)
  report.update(evaluate.heldout_nll(graphdef, params, docs, c.data.seq_len))
  at = eval_positions(c, tok, docs, source, model, desc, run_config)
  report["thought_eval"] = _settings(c, at)
  report["positions"] = at.to_json()
  rep = _thought_report(model, tok, c, docs, at)
  if not FLAGS.per_position:
    rep.pop("per_position")
  report.update(rep)
  if FLAGS.problems:
    problems = (evaluate.load_problems(FLAGS.jsonl) if FLAGS.jsonl
                else corpora.reasoning_problems("eval", FLAGS.problems))[:FLAGS.problems]
    shots = corpora.reasoning_problems("train", max(FLAGS.shots, 1))[:FLAGS.shots]
    reasoning, examples = evaluate.reasoning_eval(model, tok, problems, shots, FLAGS.samples, ks,
                                                  FLAGS.max_new_tokens, FLAGS.temperature,
                                                  fallback=FLAGS.answer_fallback)
    report.update(reasoning)
    report["examples"] = examples
  from rlp import metrics
  report["host_rss_peak_gib"] = round(metrics.host_rss_peak_gib(), 2)  # the process's peak
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out, "w") as f:
    json.dump(report, f, indent=2)
  if desc["kind"] == "checkpoint":
    from tensorboardX import SummaryWriter
    with SummaryWriter(os.path.join(FLAGS.model, "tb")) as w:
      for k, v in report.items():
        if isinstance(v, float):
          w.add_scalar(k, v, desc["step"])
  if FLAGS.wandb_project:
    run = metrics.start_wandb(os.path.dirname(os.path.abspath(out)), FLAGS.wandb_project,
                              name=f"eval {os.path.basename(os.path.abspath(FLAGS.model))}",
                              config={"model": FLAGS.model, **desc}, resume_id=False)
    run.log({k: v for k, v in report.items() if isinstance(v, (int, float))},
            step=int(desc.get("step") or 0))
    run.finish()
  print(json.dumps({k: v for k, v in report.items()
                    if k not in ("examples", "per_position", "positions")}))
  print(out)


def compare(paths):
  """Every model at one set of positions: one table (markdown on stdout, JSON at --out)."""
  from flax import nnx
  from rlp import evaluate
  if len(paths) < 1:
    cli.die("rlp-eval", "compare needs at least one model: rlp-eval compare PATH_A PATH_B ...")
  _placebos()
  out = FLAGS.out or "compare.json"
  if os.path.exists(out) and not FLAGS.overwrite:
    raise evaluate.EvalError(f"{out} exists; pass --overwrite or another --out")
  loaded = [evaluate.load_for_eval(p, FLAGS.use_ema) for p in paths]
  configs = [d.pop("config", None) for _, _, d in loaded]
  run_config = next((rc for rc in configs if rc is not None), None)
  tok = loaded[0][1]
  for (_, t, d), p in zip(loaded[1:], paths[1:]):
    if t.fingerprint != tok.fingerprint:
      raise evaluate.EvalError(f"{p} uses another tokenizer than {paths[0]}; models compared at "
                               "the same positions must tokenize the documents the same way")
  c = thought_eval_config(run_config)
  source = _source(run_config)
  docs = _documents(tok, source)
  at = eval_positions(c, tok, docs, source, loaded[0][0], loaded[0][2], configs[0],
                      self_name=f"{paths[0]} (the first model compared)")
  rows = []
  for (model, _, desc), path in zip(loaded, paths):
    graphdef, params = nnx.split(model)
    rep = {"model": path, **evaluate.heldout_nll(graphdef, params, docs, c.data.seq_len),
           **_thought_report(model, tok, c, docs, at)}
    rows.append(rep)
    print(f"rlp-eval: {path}: gain {rep['eval/information_gain']:+.2f}", file=sys.stderr,
          flush=True)
  table = compare_table(rows, at, _placebos())
  result = {"likelihood_source": source, "thought_eval": _settings(c, at),
            "positions": at.to_json(), "models": rows, "table": table}
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out, "w") as f:
    json.dump(result, f, indent=2)
  with open(os.path.splitext(out)[0] + ".md", "w") as f:
    f.write(table + "\n")
  print(table)
  print(out)


def _harness(path: str) -> dict:
  """lm-evaluation-harness results (its own dict) of the model at `path` on --tasks."""
  import lm_eval
  from lm_eval.tasks import TaskManager
  from rlp import evaluate, harness
  include = [harness.local_tasks_dir()] + ([FLAGS.include_path] if FLAGS.include_path else [])
  if FLAGS.include_path and not os.path.isdir(FLAGS.include_path):
    raise evaluate.EvalError(f"--include_path={FLAGS.include_path} is not a directory")
  if FLAGS.include_path:
    harness.check_task_files(FLAGS.include_path)
  try:
    tm = TaskManager(include_path=include)
  except Exception as e:  # a task file that does not parse
    raise evaluate.EvalError(f"the task files in {include[-1]} do not load: {e}") from None
  limit = None if FLAGS.limit is None else (int(FLAGS.limit) if FLAGS.limit >= 1 else FLAGS.limit)
  tasks, limit, chose = harness.resolve_tasks(FLAGS.tasks, limit)
  if chose:
    print(f"rlp-eval: --tasks: {chose}", file=sys.stderr, flush=True)
  unknown = [t for t in tasks if not tm.match_tasks([t])]
  if unknown:
    raise evaluate.EvalError(f"--tasks: unknown {unknown}; the offline tasks are "
                             f"{', '.join(harness.OFFLINE_TASKS)} (--tasks=offline), others by "
                             "name need the harness's datasets, or --include_path=DIR")
  lm = harness.RLPLM(path=path, batch_size=FLAGS.batch_size, think=FLAGS.think,
                     thought_len=FLAGS.thought_len or 32, use_ema=FLAGS.use_ema)
  try:
    res = lm_eval.simple_evaluate(model=lm, tasks=tasks, num_fewshot=FLAGS.num_fewshot,
                                  limit=limit, task_manager=tm, log_samples=False)
  except (ValueError, KeyError, FileNotFoundError) as e:  # e.g. a task whose data cannot load
    raise evaluate.EvalError(f"lm-evaluation-harness could not run {tasks}: {e}") from None
  res["config"]["model"] = f"rlp (path={path})"
  return res


def harness_cmd():
  from lm_eval.utils import make_table
  res = _harness(FLAGS.model)
  print(make_table(res))
  if FLAGS.output_path:
    os.makedirs(FLAGS.output_path, exist_ok=True)
    out = os.path.join(FLAGS.output_path, "results.json")
    if os.path.exists(out) and not FLAGS.overwrite:
      from rlp import evaluate
      raise evaluate.EvalError(f"{out} exists; pass --overwrite or another --output_path")
    with open(out, "w") as f:
      json.dump(res, f, indent=2, default=str)
    print(out)


def _task_scores(res) -> dict:
  """{task: (metric, value, stderr, n)}: each task's first metric (exact_match / acc)."""
  out = {}
  for task, m in res["results"].items():
    keys = [k for k in m if "," in k and not k.split(",")[0].endswith("_stderr")
            and isinstance(m[k], (int, float))]
    if not keys:
      continue
    key = next((k for k in keys if k.startswith(("exact_match", "acc,"))), keys[0])
    err = m.get(key.replace(",", "_stderr,"), 0.0)
    n = res.get("n-samples", {}).get(task, {}).get("effective")
    out[task] = (key.split(",")[0], float(m[key]), float(err if isinstance(err, float) else 0), n)
  return out


def table_cmd(paths):
  """Every model on --tasks (and the held-out all-token NLL): a markdown table and a bar chart."""
  from flax import nnx
  from rlp import evaluate
  if not paths:
    cli.die("rlp-eval", "table needs at least one model: rlp-eval table PATH_A PATH_B ...")
  out_dir = FLAGS.output_path or "eval_table"
  table_md = os.path.join(out_dir, "table.md")
  if os.path.exists(table_md) and not FLAGS.overwrite:
    raise evaluate.EvalError(f"{table_md} exists; pass --overwrite or another --output_path")
  rows = []
  for path in paths:
    model, tok, desc = evaluate.load_for_eval(path, FLAGS.use_ema)
    run_config = desc.pop("config", None)
    docs = _documents(tok, _source(run_config))
    graphdef, params = nnx.split(model)
    nll = evaluate.heldout_nll(graphdef, params, docs, FLAGS.seq_len or 256)["eval/nll"]
    del model
    scores = _task_scores(_harness(path))
    rows.append({"model": path, "nll": nll, "tasks": scores})
    print(f"rlp-eval: {path}: " + ", ".join(f"{t} {v[1]:.3f}" for t, v in scores.items()),
          file=sys.stderr, flush=True)
  tasks = sorted({t for r in rows for t in r["tasks"]})
  head = ["model"] + [f"{t} ({rows[0]['tasks'][t][0]}, n={rows[0]['tasks'][t][3]})"
                      for t in tasks if t in rows[0]["tasks"]] + ["average", "held-out NLL"]
  lines = ["Scores with 95% intervals (1.96 x the harness's standard error); "
           f"{'with' if FLAGS.think else 'without'} a thought first.", "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for r in rows:
    vals = [r["tasks"][t] for t in tasks if t in r["tasks"]]
    avg = float(np.mean([v[1] for v in vals])) if vals else float("nan")
    lines.append("| " + " | ".join([r["model"]] + [f"{v[1]:.3f} +- {1.96 * v[2]:.3f}" for v in vals]
                                   + [f"{avg:.3f}", f"{r['nll']:.3f}"]) + " |")
  os.makedirs(out_dir, exist_ok=True)
  with open(table_md, "w") as f:
    f.write("\n".join(lines) + "\n")
  with open(os.path.join(out_dir, "table.json"), "w") as f:
    json.dump(rows, f, indent=2)
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(1.6 * (len(tasks) + 1) * max(1, len(rows)) / 2 + 3, 4))
  width = 0.8 / len(rows)
  for i, r in enumerate(rows):
    vals = [r["tasks"].get(t, (None, 0.0, 0.0, None)) for t in tasks]
    avg = float(np.mean([v[1] for v in vals])) if vals else 0.0
    xs = np.arange(len(tasks) + 1) + i * width
    ax.bar(xs, [v[1] for v in vals] + [avg], width, yerr=[1.96 * v[2] for v in vals] + [0.0],
           label=os.path.basename(os.path.normpath(r["model"])) or r["model"], capsize=2)
  ax.set_xticks(np.arange(len(tasks) + 1) + 0.4 - width / 2)
  ax.set_xticklabels(tasks + ["average"], rotation=15, fontsize=8)
  ax.set_ylabel("score")
  ax.legend(fontsize=8)
  fig.tight_layout()
  chart = os.path.join(out_dir, "chart.png")
  fig.savefig(chart, dpi=80)
  print("\n".join(lines))
  print(table_md)
  print(chart)


def compare_table(rows, at, placebos) -> str:
  """Markdown: per model the means at the shared positions, gains with their intervals, and
  each model's best mode (with or without a thought, whichever scores higher here) minus the
  first model's best mode, paired over the same positions."""
  from rlp import thought_eval

  def ci(rep, key):
    lo, hi = rep[key + "_ci"]
    return f"{rep[key]:+.2f} [{lo:+.2f}, {hi:+.2f}]"
  k = at.per_doc
  head = (["model", "S_plain", "S_pred", "gain"] + [f"- {p}" for p in placebos]
          + ["acc. thought / plain", "NLL (all tokens)", "best mode", "best - first's best"])
  lines = [f"Positions: {at.selected_by}; {at.t.size} positions in {len(at.doc)} documents. "
           "Gains are nats per position, [95% interval over documents].", "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  best = []
  for rep in rows:
    recs = rep["per_position"]
    pred = np.asarray([np.mean(r["s_pred"]) for r in recs])
    plain = np.asarray([r["s_plain"] for r in recs])
    think = pred.mean() >= plain.mean()
    best.append((pred if think else plain, "thought" if think else "no thought"))
  for rep, (b, mode) in zip(rows, best):
    diff = (b - best[0][0]).reshape(-1, k).mean(1)
    lo, hi = thought_eval.bootstrap_ci(diff, seed=FLAGS.seed)
    cells = ([rep["model"], f"{rep['eval/s_plain_mean']:.2f}", f"{rep['eval/s_pred_mean']:.2f}",
              ci(rep, "eval/information_gain")]
             + [ci(rep, f"eval/gain_over_placebo/{p}") if f"eval/gain_over_placebo/{p}" in rep
                else "-" for p in placebos]
             + [f"{rep['eval/next_token_acc_thought']:.0%} / {rep['eval/next_token_acc_plain']:.0%}",
                f"{rep['eval/nll']:.3f}", f"{b.mean():.2f} ({mode})",
                f"{diff.mean():+.2f} [{lo:+.2f}, {hi:+.2f}]"])
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def run():
  cli.run(main, sys.modules[__name__], "rlp-eval")


if __name__ == "__main__":
  run()

