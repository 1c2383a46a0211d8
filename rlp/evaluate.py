"""Evaluation of a checkpoint, HF directory or GGUF file: held-out all-token likelihood, few-shot
generation with verifiable answers (greedy pass@1, sampled pass@k with the unbiased estimator of
Chen et al. 2021, diversity of the samples), and loading what to evaluate. The thought eval (with
and without a thought, against placebos) is rlp/thought_eval.py."""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import models
from models import generate as generation
from models.tokenizer import load_tokenizer
from rlp import answers
from rlp import batches
from rlp import checkpoint
from rlp import configuration
from rlp import data
from rlp import objective
from rlp import schema
from rlp import thought_eval
from rlp import trainer
from rlp.thought_format import thought_format


EvalError = answers.EvalError


# ---------------------------------------------------------------- likelihood
@functools.partial(jax.jit, static_argnames=("graphdef",))
def _nll_sum(graphdef, params, tokens, lengths):
  logits = nnx.merge(graphdef, params)(tokens)[:, :-1]
  mask = jnp.arange(tokens.shape[1] - 1)[None] < (lengths[:, None] - 1)
  nll = -objective.token_logp(logits, tokens[:, 1:])
  return (nll * mask).sum(), mask.sum()


def heldout_nll(graphdef, params, docs, seq_len: int, batch_size: int = 4, pad_id: int = 0) -> dict:
  """Per-token NLL and perplexity of documents (list of int arrays), truncated to seq_len."""
  total, count = 0.0, 0
  for i in range(0, len(docs), batch_size):
    toks, lens = batches.pad_rows(docs[i:i + batch_size], seq_len, batch_size, pad_id)
    s, n = _nll_sum(graphdef, params, jnp.asarray(toks), jnp.asarray(lens))
    total += float(s)
    count += int(n)
  nll = total / max(count, 1)
  return {"eval/nll": nll, "eval/ppl": float(np.exp(min(nll, 50.0))), "eval/tokens": count}


# ---------------------------------------------------------------- generation
def generate(model, tok, prompts: Sequence[str], max_new_tokens: int, temperature: float = 0.0,
             top_p: float = 1.0, seed: int = 0) -> list[list[int]]:
  """Each prompt's text, encoded as a document, -> its next `max_new_tokens` token ids."""
  return generation.generate_ids(model, [tok.encode_document(p) for p in prompts],
                                 max_new_tokens, temperature, top_p, seed)


def _completion(tok, ids: list[int]) -> str:
  """The generated text up to the first EOS (what follows it is not the model's answer) and
  before the next few-shot "Question:"."""
  if tok.eos_id is not None and tok.eos_id in ids:
    ids = ids[:ids.index(tok.eos_id)]
  return re.split(r"\n\s*Question:", tok.decode(ids))[0]


def reasoning_eval(model, tok, problems: Sequence[dict], shots: Sequence[dict], samples: int,
                   ks: Sequence[int], max_new_tokens: int = 160, temperature: float = 0.7,
                   seed: int = 0, batch_size: int = 8, fallback: bool = False) -> dict:
  """Greedy pass@1 and sampled pass@k over `samples` answers per problem, plus diversity.
  Answers count only in an explicit form (answers.check_answer: compared as mathematics with
  math-verify; reasoning/scored_by counts the greedy answers by rule); with fallback=True the
  same metrics with the last-number fallback are added under `reasoning_fallback/`."""
  prompts = [answers.few_shot_prompt(p["question"], shots) for p in problems]
  greedy_fb, counts_fb = [], []
  greedy_ok, counts, div = [], [], {"distinct_1": [], "distinct_2": [], "edit": [], "entropy": []}
  examples, rules = [], {}
  for i in range(0, len(prompts), batch_size):
    chunk = prompts[i:i + batch_size]
    for j, ids in enumerate(generate(model, tok, chunk, max_new_tokens, 0.0)):
      text = _completion(tok, ids)
      gold = problems[i + j]["answer"]
      ok, rule = answers.check_answer(text, gold)
      greedy_ok.append(ok)
      greedy_fb.append(answers.check_answer(text, gold, fallback=True)[0])
      rules[rule] = rules.get(rule, 0) + 1
      if len(examples) < 3:
        examples.append({"question": problems[i + j]["question"], "completion": text,
                         "extracted": answers.extract_answer(text), "gold": gold,
                         "scored_by": rule, "correct": ok})
  for n, prompt in enumerate(prompts):
    outs = generate(model, tok, [prompt] * samples, max_new_tokens, temperature, seed=seed + n)
    texts = [_completion(tok, o) for o in outs]
    counts.append(sum(answers.check_answer(t, problems[n]["answer"])[0] for t in texts))
    counts_fb.append(sum(answers.check_answer(t, problems[n]["answer"], fallback=True)[0]
                         for t in texts))
    toks = [tok.encode(t) for t in texts]
    div["distinct_1"].append(answers.distinct_n(toks, 1))
    div["distinct_2"].append(answers.distinct_n(toks, 2))
    div["edit"].append(answers.mean_pairwise_edit(toks))
    div["entropy"].append(answers.unigram_entropy(toks))
  report = {"reasoning/scored_by": rules, "reasoning/problems": len(problems),
            "reasoning/samples": samples,
            "reasoning/pass@1_greedy": float(np.mean(greedy_ok))}
  if fallback:
    report["reasoning_fallback/pass@1_greedy"] = float(np.mean(greedy_fb))
  for k in ks:
    if k <= samples:
      report[f"reasoning/pass@{k}"] = float(np.mean([answers.pass_at_k(samples, c, k) for c in counts]))
      if fallback:
        report[f"reasoning_fallback/pass@{k}"] = float(
            np.mean([answers.pass_at_k(samples, c, k) for c in counts_fb]))
  report.update({"diversity/distinct_1": float(np.mean(div["distinct_1"])),
                 "diversity/distinct_2": float(np.mean(div["distinct_2"])),
                 "diversity/pairwise_edit": float(np.mean(div["edit"])),
                 "diversity/token_entropy": float(np.mean(div["entropy"]))})
  return report, examples


# ---------------------------------------------------------------- the in-run eval
class InRunEval:
  """A training run's held-out eval: the documents' NLL, the thought eval (with and without a
  thought, against placebos) at the run's fixed positions, and pass@k over training, each with
  the run's own sampler and thought format (`__call__` gives the metrics of one params)."""

  def __init__(self, settings: schema.Run, tok, graphdef, docs, at):
    self.settings, self.tok, self.graphdef, self.docs, self.at = settings, tok, graphdef, docs, at
    self.sampler = configuration.sampler_config(settings, tok)
    self.exclude = thought_format(tok, settings.rlp.template).open_token

  @staticmethod
  def documents(settings: schema.Run, tok) -> list:
    """The held-out documents: train.eval_docs of data.eval_source (none when either is off)."""
    t, d = settings.train, settings.data
    if not t.eval_docs or not d.eval_source:
      return []
    ds, _ = data.open_documents(d.eval_source, tok, min_tokens=2, num_docs=t.eval_docs)
    return [ds[i] for i in range(min(len(ds), t.eval_docs))]

  def reasoning_due(self, step: int, total: int) -> bool:
    every = self.settings.train.eval_reasoning_every
    return bool(every) and (step % every == 0 or step == total)

  def __call__(self, params, heldout: bool = True, reasoning: bool = False) -> dict:
    ev = {}
    if heldout:
      ev.update(heldout_nll(self.graphdef, params, self.docs, self.settings.data.seq_len))
      if self.at is not None and self.settings.objective != "rpt":
        ev.update(self._thought_eval(params))
    if reasoning:  # pass@k: each held-out position a problem solved by n sampled thoughts
      t = self.settings.train
      ev.update({k: v for k, v in self._thought_eval(
          params, t.eval_reasoning_samples, tuple(t.eval_reasoning_ks), seed=1).items()
          if k.startswith(("reasoning/", "diversity/"))})
    return ev

  def _thought_eval(self, params, group=None, ks=(), seed=0) -> dict:
    cfg = dataclasses.replace(self.sampler, group_size=group) if group else self.sampler
    return thought_eval.thought_likelihood(
        nnx.merge(self.graphdef, params), self.docs, cfg, self.settings.data.seq_len, self.at,
        seed=self.settings.seed + seed, batch_size=max(1, min(len(self.docs), 8)),
        baseline_exclude=self.exclude, placebos=tuple(self.settings.train.eval_placebos), ks=ks)


# ---------------------------------------------------------------- loading what to evaluate
def load_for_eval(path: str, use_ema: bool = False):
  """(model, tokenizer, description) for a GGUF file, an HF directory, a training run's workdir
  (its newest checkpoint; `use_ema` takes the EMA params) or "smollm2". For a workdir the
  description's "config" is the run's config (its sampler, thought format and selection)."""
  if path == "smollm2":
    path = models.smollm2_path()
  if os.path.isfile(path):
    model, tok = models.load_gguf(path, with_tokenizer=True)
    return model, tok, {"kind": "gguf", "path": path}
  if os.path.isdir(os.path.join(path, "checkpoints")):
    config = configuration.load_run_config(path)
    model, tok = configuration.load_run_model(config)
    tx = configuration.optimizer(config)
    state = trainer.init_state(model, tx, kl_beta=config.rlp.kl_beta)
    got = checkpoint.restore_run(path, checkpoint.abstract_like(state))
    if got is None:
      raise EvalError(f"{path}/checkpoints holds no readable checkpoint")
    params = got.state.ema if use_ema else got.state.params
    # Orbax hands back arrays committed to a device, while a model built or loaded from GGUF /
    # HF is uncommitted; jit keys its cache on that, so evaluating a checkpoint after another
    # model in one process (a notebook comparing them) would compile the rollout again. The
    # eval runs unsharded, on the default device: hand back uncommitted arrays like the others.
    params = jax.tree.map(lambda a: jnp.asarray(np.asarray(a)), params)
    graphdef = nnx.graphdef(model)
    return nnx.merge(graphdef, params), tok, {"kind": "checkpoint", "path": path,
                                               "step": got.step, "ema": use_ema, "config": config}
  if os.path.isfile(os.path.join(path, "config.json")):
    return models.load_hf(path), load_tokenizer(path), {"kind": "hf", "path": path}
  raise EvalError(f"{path} is not a GGUF file, an HF directory or a run's workdir")


def load_start(run_config):
  """The model a run started from: the checkpoint it was initialised from, else its configured
  model (GGUF, HF directory, or the seeded random init)."""
  if run_config.model.init == "checkpoint":
    return load_for_eval(run_config.model.path)[0]
  return configuration.load_model_and_tokenizer(run_config)[0]


def selection_model(select_with: str, model, desc: dict, run_config, tok, self_name=None):
  """(model, name) that chooses entropy / low_logp positions: `select_with` when given (it must
  share the tokenizer), else a run's starting model (shared by the run and its twins), else the
  evaluated model itself (named `self_name`, by default as a self-selection, which favours a
  positive gain)."""
  if select_with:
    ref, ref_tok, _ = load_for_eval(select_with)
    if ref_tok.fingerprint != tok.fingerprint:
      raise EvalError(f"--select_with={select_with} tokenizes differently from the evaluated "
                      "model; choose positions with a model of the same tokenizer")
    return ref, select_with
  if run_config is not None:
    m = run_config.model
    return load_start(run_config), (f"the run's starting model ({m.init}"
                                    + (f" {m.path})" if m.path else f", seed {run_config.seed})"))
  return model, self_name or f"{desc.get('path', '')} (the model evaluated: self-selected)"


def default_report_path(model_path: str, desc, overwrite: bool = False) -> str:
  """Where rlp-eval writes its report without --out: MODEL/eval/step-N.json for a run's
  checkpoint, else ./eval_report.json. If that report exists (an earlier eval of the same step,
  e.g. on other documents), the first free -2, -3, ... name, so an eval never fails on, or
  replaces, an earlier report; with overwrite, the base name itself (to be replaced)."""
  stem = (os.path.join(model_path, "eval", f"step-{desc['step']}")
          if desc["kind"] == "checkpoint" else "eval_report")
  out, k = stem + ".json", 2
  while os.path.exists(out) and not overwrite:
    out, k = f"{stem}-{k}.json", k + 1
  return out
