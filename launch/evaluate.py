"""rlp-eval --model=PATH [--likelihood_source=SOURCE] [--jsonl=problems.jsonl] [--out=report.json]

PATH: a GGUF file, an HF directory, a training run's workdir (newest checkpoint), or "smollm2".
Writes one JSON report: held-out NLL, thought-augmented likelihood and information gain, next-token
accuracy with and without a thought, greedy pass@1, sampled pass@k (unbiased estimator) and
diversity (distinct-n, pairwise edit distance, token entropy). A small model may score 0: that is
reported, not hidden. --per_position adds one record per thought-eval position (the token, its
context, S_plain, each thought's S_pred and the gain), to see which tokens thinking helps with.

The thought eval uses, for a run's workdir, the run's own thought format, sampler settings and
position selection (each can be overridden by a flag); for a GGUF / HF model the flags' defaults.
--likelihood_source takes any data source the trainer takes (jsonl:FILE with a "text" field,
text:FILE, reasoning:eval, toy:eval, arrayrecord:DIR, ...); default: the run's data.eval_source,
else reasoning:eval.
"""

import json
import os
import sys

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
                  "as text, S_plain, each thought's S_pred, gain): where thinking helps")
flags.DEFINE_bool("use_ema", False, "evaluate a run's EMA params instead of its params")
flags.DEFINE_string("out", None, "report path (default: WORKDIR/eval/step-N.json for a run, "
                    "else ./eval_report.json; when that exists, the first free step-N-2.json, "
                    "step-N-3.json, ..., so repeated evals of a run keep every report)")
flags.DEFINE_bool("overwrite", False, "replace an existing report: the one named by --out, or "
                  "without --out the default step-N.json (eval_report.json)")
flags.DEFINE_bool("answer_fallback", False, "also score answers by the last number in the text "
                  "when no explicit form (#### N, \\boxed{N}, 'the answer is N') is found; "
                  "reported apart as reasoning_fallback/*")
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


def main(argv):
  from absl import logging
  logging.set_verbosity(logging.WARNING)
  from rlp import configuration, corpora, data, evaluate
  from rlp.thought_format import thought_format
  if len(argv) > 1:
    cli.die("rlp-eval", f"unexpected arguments {argv[1:]}; flags are written --name=value")
  try:
    ks = [int(k) for k in FLAGS.k]
  except ValueError:
    ks = []
  if not ks or any(k < 1 or k > FLAGS.samples for k in ks):
    cli.die("rlp-eval", f"--k={','.join(FLAGS.k)}: pass@k needs integers 1 <= k <= --samples "
            f"({FLAGS.samples})")
  model, tok, desc = evaluate.load_for_eval(FLAGS.model, FLAGS.use_ema)
  run_config = desc.pop("config", None)
  out = FLAGS.out or evaluate.default_report_path(FLAGS.model, desc, FLAGS.overwrite)
  if os.path.exists(out) and not FLAGS.overwrite:
    raise evaluate.EvalError(f"{out} exists; pass --overwrite or another --out")
  c = thought_eval_config(run_config)
  source = FLAGS.likelihood_source or (run_config.data.eval_source if run_config is not None
                                       and run_config.data.eval_source else "reasoning:eval")
  report = {"model": desc, "likelihood_source": source}
  docs_ds, stats = data.open_documents(source, tok, num_docs=FLAGS.likelihood_docs)
  docs = [docs_ds[i] for i in range(min(len(docs_ds), FLAGS.likelihood_docs))]
  from flax import nnx
  graphdef, params = nnx.split(model)
  report.update(evaluate.heldout_nll(graphdef, params, docs, c.data.seq_len))
  report["thought_eval"] = {"group_size": c.rlp.group_size,
                            "max_thought_len": c.rlp.max_thought_len,
                            "temperature": c.rlp.temperature, "template": c.rlp.template,
                            "selection": c.data.selection,
                            "position_marker": c.data.position_marker,
                            "positions_per_doc": c.train.eval_positions,
                            "min_prefix": c.data.min_prefix, "seed": FLAGS.seed}
  report.update(evaluate.thought_likelihood(
      model, docs, configuration.sampler_config(c, tok), c.data.seq_len,
      positions=max(1, c.train.eval_positions), min_prefix=c.data.min_prefix, seed=FLAGS.seed,
      batch_size=max(1, min(len(docs), 4)), selection=c.data.selection,
      marker_ids=configuration.marker_ids(c, tok),
      baseline_exclude=thought_format(tok, c.rlp.template).open_token,
      per_position=FLAGS.per_position))
  for rec in report.get("per_position", ()):
    doc = docs[rec["doc"]]
    rec["target_text"] = tok.decode([rec["target"]])
    rec["context"] = tok.decode([int(x) for x in doc[max(0, rec["t"] - 16):rec["t"]]])
  if FLAGS.problems:
    problems = (evaluate.load_problems(FLAGS.jsonl) if FLAGS.jsonl
                else corpora.reasoning_problems("eval", FLAGS.problems))[:FLAGS.problems]
    shots = corpora.reasoning_problems("train", max(FLAGS.shots, 1))[:FLAGS.shots]
    reasoning, examples = evaluate.reasoning_eval(model, tok, problems, shots, FLAGS.samples, ks,
                                                  FLAGS.max_new_tokens, FLAGS.temperature,
                                                  fallback=FLAGS.answer_fallback)
    report.update(reasoning)
    report["examples"] = examples
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out, "w") as f:
    json.dump(report, f, indent=2)
  if desc["kind"] == "checkpoint":
    from tensorboardX import SummaryWriter
    with SummaryWriter(os.path.join(FLAGS.model, "tb")) as w:
      for k, v in report.items():
        if isinstance(v, float):
          w.add_scalar(k, v, desc["step"])
  print(json.dumps({k: v for k, v in report.items() if k not in ("examples", "per_position")}))
  print(out)


def run():
  cli.run(main, sys.modules[__name__], "rlp-eval")


if __name__ == "__main__":
  run()

