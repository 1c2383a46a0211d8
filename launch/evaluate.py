"""rlp-eval --model=PATH [--jsonl=problems.jsonl] [--out=report.json]

PATH: a GGUF file, an HF directory, a training run's workdir (newest checkpoint), or "smollm2".
Writes one JSON report: held-out NLL, thought-augmented likelihood and information gain, next-token
accuracy with and without a thought, greedy pass@1, sampled pass@k (unbiased estimator) and
diversity (distinct-n, pairwise edit distance, token entropy). A small model may score 0: that is
reported, not hidden.
"""

import json
import os
import sys

from absl import app, flags

flags.DEFINE_string("model", "smollm2", "GGUF file, HF directory, run workdir or 'smollm2'")
flags.DEFINE_string("jsonl", None, "problems as JSONL {question, answer}; default: the shipped "
                    "held-out gsm_symbolic split")
flags.DEFINE_integer("problems", 8, "number of problems")
flags.DEFINE_integer("samples", 4, "sampled answers per problem (n of pass@k)")
flags.DEFINE_list("k", ["1", "2", "4"], "k values for pass@k (<= samples)")
flags.DEFINE_integer("shots", 2, "few-shot examples from the training split")
flags.DEFINE_integer("max_new_tokens", 160, "answer length")
flags.DEFINE_float("temperature", 0.7, "sampling temperature for pass@k")
flags.DEFINE_integer("likelihood_docs", 8, "held-out documents for the likelihood metrics")
flags.DEFINE_integer("seq_len", 256, "context length for the likelihood metrics")
flags.DEFINE_integer("group", 4, "thoughts per position for the thought-augmented likelihood")
flags.DEFINE_integer("thought_len", 24, "thought length for the thought-augmented likelihood")
flags.DEFINE_bool("use_ema", False, "evaluate a run's EMA params instead of its params")
flags.DEFINE_string("out", None, "report path (default: WORKDIR/eval/step-N.json for a run, "
                    "else ./eval_report.json)")
flags.DEFINE_bool("overwrite", False, "replace an existing report")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  from absl import logging
  logging.set_verbosity(logging.WARNING)
  from rlp import corpora, data as D, evaluate as E, sampler as S
  try:
    model, tok, desc = E.load_for_eval(FLAGS.model, FLAGS.use_ema)
    out = FLAGS.out or (os.path.join(FLAGS.model, "eval", f"step-{desc['step']}.json")
                        if desc["kind"] == "checkpoint" else "eval_report.json")
    if os.path.exists(out) and not FLAGS.overwrite:
      raise E.EvalError(f"{out} exists; pass --overwrite or another --out")
    problems = (E.load_problems(FLAGS.jsonl) if FLAGS.jsonl
                else corpora.reasoning_problems("eval", FLAGS.problems))[:FLAGS.problems]
    shots = corpora.reasoning_problems("train", max(FLAGS.shots, 1))[:FLAGS.shots]
    ks = [int(k) for k in FLAGS.k]
    report = {"model": desc}
    docs_ds, _ = D.open_documents("reasoning:eval", tok, num_docs=FLAGS.likelihood_docs)
    docs = [docs_ds[i] for i in range(len(docs_ds))]
    import jax
    from flax import nnx
    graphdef, params = nnx.split(model)
    report.update(E.heldout_nll(graphdef, params, docs, FLAGS.seq_len))
    scfg = S.SamplerConfig(group_size=FLAGS.group, max_thought_len=FLAGS.thought_len,
                           temperature=0.7, prompt_ids=tuple(tok.think_open_ids),
                           close_ids=tuple(tok.think_close_ids))
    report.update(E.thought_likelihood(model, docs, scfg, FLAGS.seq_len))
    reasoning, examples = E.reasoning_eval(model, tok, problems, shots, FLAGS.samples, ks,
                                           FLAGS.max_new_tokens, FLAGS.temperature)
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
    print(json.dumps({k: v for k, v in report.items() if k != "examples"}))
    print(out)
  except (E.EvalError, D.DataError) as e:
    print(f"rlp-eval: error: {e}", file=sys.stderr)
    sys.exit(2)


def run():
  app.run(main)


if __name__ == "__main__":
  run()
