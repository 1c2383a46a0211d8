"""Evaluation of a checkpoint, HF directory or GGUF file: held-out likelihood (with and without a
thought), next-token accuracy at sampled positions, verifiable reasoning (pass@k with the unbiased
estimator of Chen et al. 2021) and diversity of the samples."""

from __future__ import annotations

import functools
import json
import math
import os
import re
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from models import backend
from rlp import objective
from rlp import sampler


class EvalError(ValueError):
  pass


# ---------------------------------------------------------------- pass@k and answers
def pass_at_k(n: int, c: int, k: int) -> float:
  """Unbiased pass@k = 1 - C(n - c, k) / C(n, k) for n samples of which c are correct."""
  if not 0 <= c <= n or k < 1:
    raise EvalError(f"pass_at_k needs 0 <= c <= n and k >= 1 (got n={n}, c={c}, k={k})")
  if k > n:
    raise EvalError(f"pass@{k} needs at least {k} samples (got n={n})")
  if n - c < k:
    return 1.0
  return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


# A number, with a sign only when the minus is attached to it and not part of an expression
# ("12 - 4" and "12-4" are not -4).
_NUM = r"(?:(?<![\w)\]])-)?(?:\$\s?)?\d[\d,]*(?:\.\d+)?|(?:(?<![\w)\]])-)?\.\d+"


def _clean_number(s: str) -> str | None:
  s = s.replace("$", "").replace(",", "").replace(" ", "").rstrip(".")
  try:
    v = float(s)
  except ValueError:
    return None
  if math.isfinite(v) and v == int(v):
    return str(int(v))
  return repr(v)


def extract_answer(text: str, fallback: bool = False) -> str | None:
  """The final answer of a solution in an explicit form: `#### N`, then `\\boxed{N}`, then "the
  (final) answer is N". With fallback=True, else the last number in the text (reported apart:
  it credits a model that writes numbers at random)."""
  m = re.search(r"####\s*(" + _NUM + ")", text)
  if m:
    return _clean_number(m.group(1))
  m = re.findall(r"\\boxed\{\s*(" + _NUM + r")\s*\}", text)
  if m:
    return _clean_number(m[-1])
  m = re.findall(r"answer is[:\s]*(" + _NUM + ")", text, flags=re.IGNORECASE)
  if m:
    return _clean_number(m[-1])
  if not fallback:
    return None
  nums = re.findall(_NUM, text)
  for n in reversed(nums):
    v = _clean_number(n)
    if v is not None:
      return v
  return None


def answers_match(pred: str | None, gold: str) -> bool:
  if pred is None:
    return False
  g = _clean_number(str(gold))
  try:
    return g is not None and abs(float(pred) - float(g)) <= 1e-6 * max(1.0, abs(float(g)))
  except ValueError:
    return False


def load_problems(path: str) -> list[dict]:
  """A JSONL of {"question": ..., "answer": ...}; a bad line is named in the error."""
  out = []
  with open(path, encoding="utf-8") as f:
    for i, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        obj = json.loads(line)
      except json.JSONDecodeError as e:
        raise EvalError(f"{path}:{i} is not valid JSON ({e.msg})") from e
      for key in ("question", "answer"):
        if not isinstance(obj, dict) or key not in obj:
          raise EvalError(f"{path}:{i} has no {key!r} field (each line needs question and answer)")
      out.append({"question": str(obj["question"]), "answer": str(obj["answer"])})
  if not out:
    raise EvalError(f"{path} holds no problems")
  return out


def few_shot_prompt(question: str, shots: Sequence[dict]) -> str:
  parts = [f"Question: {s['question']}\nAnswer: {s['solution'].strip()}\n\n" for s in shots]
  return "".join(parts) + f"Question: {question}\nAnswer:"


# ---------------------------------------------------------------- diversity
def distinct_n(samples: Sequence[Sequence[int]], n: int) -> float:
  grams = [tuple(s[i:i + n]) for s in samples for i in range(len(s) - n + 1)]
  return len(set(grams)) / len(grams) if grams else 0.0


def _edit(a, b) -> int:
  prev = list(range(len(b) + 1))
  for i, x in enumerate(a, 1):
    cur = [i]
    for j, y in enumerate(b, 1):
      cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
    prev = cur
  return prev[-1]


def mean_pairwise_edit(samples: Sequence[Sequence[int]]) -> float:
  """Mean token-level edit distance over pairs, normalised by the longer sample."""
  pairs = [(a, b) for i, a in enumerate(samples) for b in samples[i + 1:]]
  if not pairs:
    return 0.0
  return float(np.mean([_edit(a, b) / max(len(a), len(b), 1) for a, b in pairs]))


def unigram_entropy(samples: Sequence[Sequence[int]]) -> float:
  toks = [t for s in samples for t in s]
  if not toks:
    return 0.0
  _, counts = np.unique(np.asarray(toks), return_counts=True)
  p = counts / counts.sum()
  return float(-(p * np.log(p)).sum())


# ---------------------------------------------------------------- likelihood
@functools.partial(jax.jit, static_argnames=("graphdef",))
def _nll_sum(graphdef, params, tokens, lengths):
  logits = nnx.merge(graphdef, params)(tokens)[:, :-1]
  mask = jnp.arange(tokens.shape[1] - 1)[None] < (lengths[:, None] - 1)
  nll = -objective.token_logp(logits, tokens[:, 1:])
  return (nll * mask).sum(), mask.sum()


def _pad_batch(docs, seq_len, batch_size, pad_id):
  toks = np.full((batch_size, seq_len), pad_id, np.int32)
  lens = np.ones((batch_size,), np.int32)
  for j, d in enumerate(docs):
    d = np.asarray(d)[:seq_len]
    toks[j, :len(d)] = d
    lens[j] = len(d)
  return toks, lens


def heldout_nll(graphdef, params, docs, seq_len: int, batch_size: int = 4, pad_id: int = 0) -> dict:
  """Per-token NLL and perplexity of documents (list of int arrays), truncated to seq_len."""
  total, count = 0.0, 0
  for i in range(0, len(docs), batch_size):
    toks, lens = _pad_batch(docs[i:i + batch_size], seq_len, batch_size, pad_id)
    s, n = _nll_sum(graphdef, params, jnp.asarray(toks), jnp.asarray(lens))
    total += float(s)
    count += int(n)
  nll = total / max(count, 1)
  return {"eval/nll": nll, "eval/ppl": float(np.exp(min(nll, 50.0))), "eval/tokens": count}


def thought_likelihood(model, docs, cfg: sampler.SamplerConfig, seq_len: int, positions: int = 4,
                       min_prefix: int = 8, seed: int = 0, batch_size: int = 2,
                       selection: str = "uniform", marker_ids=None,
                       baseline_exclude: int | None = None, ks: Sequence[int] = (),
                       per_position: bool = False) -> dict:
  """Does thinking help this model? At `positions` target positions of each document (chosen as
  the run chooses them: uniform, after a marker, or the model's own highest-entropy /
  lowest-log-prob positions), G thoughts are sampled with `cfg` (the run's sampler and thought
  format) and compared with no thought, from the same model:

    eval/s_pred_mean          mean log p(x_t | x_<t, thought) over thoughts
    eval/s_plain_mean         log p(x_t | x_<t)
    eval/information_gain     mean over positions of (mean over thoughts of S_pred) - S_plain
    eval/next_token_acc_*     argmax after a thought (every thought counts) / with no thought

  With `ks`, each position is also a problem solved by n = cfg.group_size samples (a sampled
  thought, then the model's next token: its argmax, or the sampled prediction of an RPT sampler),
  correct when it is the document's token; on documents whose positions are answers (the toy
  testbed with selection=marker) these are problem-solving figures:

    reasoning/pass@k          unbiased pass@k over the n samples, for each k <= n in ks
    reasoning/pass@1_no_thought   the same position predicted with no thought (argmax)
    diversity/*               distinct-1/2, mean pairwise edit distance and token entropy of the
                              n thoughts of a position (text before the closer), averaged

  per_position: the report also holds "per_position", one record per position, in document
  order: {"doc": index into `docs`, "t": the position, "target": x_t's id, "s_plain", "s_pred":
  the G thoughts' S_pred, "gain": mean S_pred - S_plain} (which positions thinking helps at).

  The same seed draws the same positions and thoughts' keys, so evals of one run compare.
  baseline_exclude: a dedicated <think> token id, left out of the no-thought distribution (a model
  taught that a thought may follow keeps mass on it; "no thought here" renormalises without it).
  Documents that cannot hold a position (too short, no marker) are skipped and counted.
  """
  from rlp import data
  graphdef, params = nnx.split(model)
  rng = np.random.default_rng(seed)
  s_pred, s_plain, acc_t, acc_plain, thought_len = [], [], [], [], []
  solved, thoughts = [], []  # per position: correct samples; the n thoughts' tokens
  usable, doc_index, cut_list, tgt_list = [], [], [], []
  for i, d in enumerate(docs):
    d = np.asarray(d)[:seq_len]
    cand = None if marker_ids is None else data.marker_positions(d, marker_ids)
    if len(d) > min_prefix + 1 and (cand is None or (cand >= min_prefix).any()):
      usable.append((d, cand))
      doc_index.append(i)
  if not usable:
    raise EvalError(f"no document holds a target position (longer than min_prefix + 1 = "
                    f"{min_prefix + 1} tokens" + (", with the position marker)" if marker_ids
                                                   else ")"))
  for i in range(0, len(usable), batch_size):
    chunk = usable[i:i + batch_size]
    n_real = len(chunk)
    rows = [c[0] for c in chunk] + [chunk[0][0]] * (batch_size - n_real)  # pad rows: dropped below
    toks, lens = _pad_batch(rows, seq_len, batch_size, 0)
    logits = _to_host(_plain_logits(graphdef, params, jnp.asarray(toks)))
    if baseline_exclude is not None:
      logits[..., baseline_exclude] = -np.inf
    lp_all = logits - logits.max(-1, keepdims=True)
    lp_all = lp_all - np.log(np.exp(lp_all).sum(-1, keepdims=True))  # [B, S, V]: predicts t + 1
    if selection in ("entropy", "low_logp"):
      nxt = np.take_along_axis(lp_all[:, :-1], toks[:, 1:, None], -1)[..., 0]
      plogp = np.where(np.isfinite(lp_all), np.exp(lp_all) * lp_all, 0.0)
      score = -nxt if selection == "low_logp" else -plogp.sum(-1)[:, :-1]
      cuts = []
      for r in range(batch_size):
        cand = np.arange(min_prefix, lens[r])
        order = cand[np.argsort(-score[r, cand - 1], kind="stable")]
        cuts.append(np.sort(np.resize(order[:positions], positions)))
      cuts = np.stack(cuts).astype(np.int32)
    else:
      cands = [c[1] for c in chunk] + [chunk[0][1]] * (batch_size - n_real)
      cuts = np.stack([data.choose_positions(int(l), positions, min_prefix, rng, c)
                       for l, c in zip(lens, cands)])
    ro = jax.tree.map(_to_host, _rollout(graphdef, params, jnp.asarray(toks), jnp.asarray(cuts),
                                         jax.random.key(seed + i), cfg))
    tgt = np.take_along_axis(toks, cuts, 1)
    cut_list.append(cuts[:n_real])
    tgt_list.append(tgt[:n_real])
    prev = np.take_along_axis(lp_all, (cuts - 1)[..., None], 1)  # [B, K, V]: predicts x_t
    s_plain.append(np.take_along_axis(prev, tgt[..., None], -1)[..., 0][:n_real])
    acc_plain.append((prev.argmax(-1) == tgt)[:n_real])
    s_pred.append(np.asarray(ro.s_pred)[:n_real])
    acc_t.append((np.asarray(ro.pred_argmax) == tgt[..., None])[:n_real])
    thought_len.append(np.asarray(ro.lengths)[:n_real])
    if ks:
      answer = np.asarray(ro.prediction) if cfg.predict else np.asarray(ro.pred_argmax)
      solved.extend((answer == tgt[..., None])[:n_real].sum(-1).ravel().tolist())
      toks_np, lens_np = np.asarray(ro.tokens)[:n_real], np.asarray(ro.lengths)[:n_real]
      for b in range(n_real):
        for k in range(toks_np.shape[1]):
          thoughts.append([toks_np[b, k, g, :lens_np[b, k, g]].tolist()
                           for g in range(toks_np.shape[2])])
  sp = np.concatenate([x.reshape(-1, x.shape[-1]) for x in s_pred])  # [P, G]
  sn = np.concatenate([x.reshape(-1) for x in s_plain])  # [P]
  report = {} if not ks else _pass_report(solved, thoughts, cfg.group_size, ks, acc_plain)
  if per_position:
    cuts_all, tgts_all = np.concatenate(cut_list).ravel(), np.concatenate(tgt_list).ravel()
    docs_all = np.repeat(doc_index, positions)
    report["per_position"] = [
        {"doc": int(i), "t": int(t), "target": int(x), "s_plain": float(p),
         "s_pred": [float(v) for v in g], "gain": float(g.mean() - p)}
        for i, t, x, p, g in zip(docs_all, cuts_all, tgts_all, sn, sp)]
  return report | {"eval/s_pred_mean": float(sp.mean()), "eval/s_plain_mean": float(sn.mean()),
          "eval/information_gain": float((sp.mean(-1) - sn).mean()),
          "eval/gain_positive_frac": float((sp.mean(-1) > sn).mean()),
          "eval/next_token_acc_thought": float(np.concatenate([a.ravel() for a in acc_t]).mean()),
          "eval/next_token_acc_plain": float(np.concatenate([a.ravel() for a in acc_plain]).mean()),
          "eval/thought_len_mean": float(np.concatenate([x.ravel() for x in thought_len]).mean()),
          "eval/positions": int(sn.size), "eval/docs_skipped": len(docs) - len(usable)}


def _pass_report(solved, thoughts, n, ks, acc_plain) -> dict:
  if any(k > n for k in ks):
    raise EvalError(f"pass@{max(ks)} needs at least {max(ks)} thoughts per position (got {n})")
  rep = {"reasoning/problems": len(solved), "reasoning/samples": n,
         "reasoning/pass@1_no_thought": float(np.concatenate([a.ravel() for a in acc_plain]).mean())}
  for k in sorted(set(ks)):
    rep[f"reasoning/pass@{k}"] = float(np.mean([pass_at_k(n, c, k) for c in solved]))
  rep["diversity/distinct_1"] = float(np.mean([distinct_n(t, 1) for t in thoughts]))
  rep["diversity/distinct_2"] = float(np.mean([distinct_n(t, 2) for t in thoughts]))
  rep["diversity/pairwise_edit"] = float(np.mean([mean_pairwise_edit(t) for t in thoughts]))
  rep["diversity/token_entropy"] = float(np.mean([unigram_entropy(t) for t in thoughts]))
  return rep


def _to_host(x) -> np.ndarray:
  """A writable numpy copy of an array, also one that spans other processes' devices."""
  if getattr(x, "is_fully_addressable", True):
    return np.array(x)
  from jax.experimental import multihost_utils
  return np.array(multihost_utils.process_allgather(x, tiled=True))


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _plain_logits(graphdef, params, tokens):
  return nnx.merge(graphdef, params)(tokens)


@backend.jit(static_argnames=("graphdef", "cfg"))
def _rollout(graphdef, params, tokens, cuts, key, cfg):
  return sampler.rollout_fn(nnx.merge(graphdef, params), tokens, cuts, key, cfg)


# ---------------------------------------------------------------- generation
@backend.jit(static_argnames=("graphdef", "steps", "temperature", "top_p"))
def _generate(graphdef, params, prompt, pad_len, key, steps, temperature, top_p):
  """Left-padded prompts [B, P] (pad_len[b] pads) -> `steps` sampled tokens through the KV cache."""
  model = nnx.merge(graphdef, params)
  b, p = prompt.shape
  idx = jnp.arange(p)[None]
  seg = (idx >= pad_len[:, None]).astype(jnp.int32)
  pos = jnp.maximum(idx - pad_len[:, None], 0)
  cache = model.init_cache(b, p + steps)
  logits, cache = model.decode(prompt, cache, positions=pos, segment_ids=seg)
  last = logits[:, -1]

  def step(carry, i):
    last, cache = carry
    tok, _ = sampler.sample_logits(jax.random.fold_in(key, i), last, temperature, 0, top_p)
    positions = (p + i - pad_len)[:, None]
    logits, cache = model.decode(tok[:, None], cache, positions=positions,
                                 segment_ids=jnp.ones((b, 1), jnp.int32))
    return (logits[:, -1], cache), tok

  _, toks = jax.lax.scan(step, (last, cache), jnp.arange(steps))
  return toks.T


def generate(model, tok, prompts: Sequence[str], max_new_tokens: int, temperature: float = 0.0,
             top_p: float = 1.0, seed: int = 0) -> list[list[int]]:
  graphdef, params = nnx.split(model)
  ids = [tok.encode_document(p) for p in prompts]
  width = max(len(x) for x in ids)
  arr = np.zeros((len(ids), width), np.int32)
  pad = np.zeros((len(ids),), np.int32)
  for i, x in enumerate(ids):
    arr[i, width - len(x):] = x
    pad[i] = width - len(x)
  out = np.asarray(_generate(graphdef, params, jnp.asarray(arr), jnp.asarray(pad),
                             jax.random.key(seed), max_new_tokens, float(temperature),
                             float(top_p)))
  return [row.tolist() for row in out]


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
  Answers count only in an explicit form (extract_answer); with fallback=True the same metrics
  with the last-number fallback are added under `reasoning_fallback/`."""
  prompts = [few_shot_prompt(p["question"], shots) for p in problems]
  greedy_fb, counts_fb = [], []
  greedy_ok, counts, div = [], [], {"distinct_1": [], "distinct_2": [], "edit": [], "entropy": []}
  examples = []
  for i in range(0, len(prompts), batch_size):
    chunk = prompts[i:i + batch_size]
    for j, ids in enumerate(generate(model, tok, chunk, max_new_tokens, 0.0)):
      text = _completion(tok, ids)
      pred = extract_answer(text)
      gold = problems[i + j]["answer"]
      greedy_ok.append(answers_match(pred, gold))
      greedy_fb.append(answers_match(extract_answer(text, fallback=True), gold))
      if len(examples) < 3:
        examples.append({"question": problems[i + j]["question"], "completion": text,
                         "extracted": pred, "gold": gold})
  for n, prompt in enumerate(prompts):
    outs = generate(model, tok, [prompt] * samples, max_new_tokens, temperature, seed=seed + n)
    texts = [_completion(tok, o) for o in outs]
    counts.append(sum(answers_match(extract_answer(t), problems[n]["answer"]) for t in texts))
    counts_fb.append(sum(answers_match(extract_answer(t, fallback=True), problems[n]["answer"])
                         for t in texts))
    toks = [tok.encode(t) for t in texts]
    div["distinct_1"].append(distinct_n(toks, 1))
    div["distinct_2"].append(distinct_n(toks, 2))
    div["edit"].append(mean_pairwise_edit(toks))
    div["entropy"].append(unigram_entropy(toks))
  report = {"reasoning/problems": len(problems), "reasoning/samples": samples,
            "reasoning/pass@1_greedy": float(np.mean(greedy_ok))}
  if fallback:
    report["reasoning_fallback/pass@1_greedy"] = float(np.mean(greedy_fb))
  for k in ks:
    if k <= samples:
      report[f"reasoning/pass@{k}"] = float(np.mean([pass_at_k(samples, c, k) for c in counts]))
      if fallback:
        report[f"reasoning_fallback/pass@{k}"] = float(
            np.mean([pass_at_k(samples, c, k) for c in counts_fb]))
  report.update({"diversity/distinct_1": float(np.mean(div["distinct_1"])),
                 "diversity/distinct_2": float(np.mean(div["distinct_2"])),
                 "diversity/pairwise_edit": float(np.mean(div["edit"])),
                 "diversity/token_entropy": float(np.mean(div["entropy"]))})
  return report, examples


# ---------------------------------------------------------------- loading what to evaluate
def load_for_eval(path: str, use_ema: bool = False):
  """(model, tokenizer, description) for a GGUF file, an HF directory, a training run's workdir
  (its newest checkpoint; `use_ema` takes the EMA params) or "smollm2". For a workdir the
  description's "config" is the run's config (its sampler, thought format and selection)."""
  import models
  from models.tokenizer import load_tokenizer
  from rlp import checkpoint
  from rlp import configuration
  from rlp import trainer
  if path == "smollm2":
    path = models.smollm2_path()
  if os.path.isfile(path):
    model, tok = models.load_gguf(path, with_tokenizer=True)
    return model, tok, {"kind": "gguf", "path": path}
  if os.path.isdir(os.path.join(path, "checkpoints")):
    config = configuration.load_run_config(path)
    if config.model.init == "checkpoint":
      model, tok = configuration.load_model_and_tokenizer(
          configuration.load_run_config(config.model.path))
    else:
      model, tok = configuration.load_model_and_tokenizer(config)
    tx = configuration.optimizer(config)
    state = trainer.init_state(model, tx, kl_beta=config.rlp.kl_beta)
    ck = checkpoint.Checkpointer(os.path.join(path, "checkpoints"), async_save=False)
    got = ck.restore_latest(checkpoint.abstract_like(state))
    ck.close()
    if got is None:
      raise EvalError(f"{path}/checkpoints holds no readable checkpoint")
    params = got[0].ema if use_ema else got[0].params
    # Orbax hands back arrays committed to a device, while a model built or loaded from GGUF /
    # HF is uncommitted; jit keys its cache on that, so evaluating a checkpoint after another
    # model in one process (a notebook comparing them) would compile the rollout again. The
    # eval runs unsharded, on the default device: hand back uncommitted arrays like the others.
    params = jax.tree.map(lambda a: jnp.asarray(np.asarray(a)), params)
    graphdef = nnx.graphdef(model)
    return nnx.merge(graphdef, params), tok, {"kind": "checkpoint", "path": path,
                                               "step": got[3], "ema": use_ema, "config": config}
  if os.path.isfile(os.path.join(path, "config.json")):
    return models.load_hf(path), load_tokenizer(path), {"kind": "hf", "path": path}
  raise EvalError(f"{path} is not a GGUF file, an HF directory or a run's workdir")


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
