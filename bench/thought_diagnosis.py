"""Where does the probability of x_t go after a thought? Measurements behind docs/recipe.md.

  python -m bench.thought_diagnosis [--model=smollm2 | WORKDIR] [--docs=16] [--only=NAME,...]

For one model (default: SmolLM2-135M as shipped, or a run's workdir) on held-out gsm_symbolic
documents it prints one JSON line per variant of the thought setting: held-out information gain
(mean S_pred over G thoughts minus the same model's no-thought log-prob), next-token accuracy with
and without a thought, thought length, truncation, how the thoughts ended (canonical closer or
another tokenization of it), and the most frequent tokens the model predicts after </think>.
Variants: the template (none, in the document, an instruction prefix before the document),
the closer tokenizations, position choice (uniform, lowest no-think log-prob, highest no-think
log-prob, the answer after '####') and thought length.
"""

from __future__ import annotations

import collections
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

flags.DEFINE_string("model", "smollm2", "'smollm2', a GGUF file, an HF directory or a run's workdir")
flags.DEFINE_integer("docs", 16, "held-out reasoning documents")
flags.DEFINE_integer("positions", 2, "target positions per document")
flags.DEFINE_integer("group", 4, "thoughts per position")
flags.DEFINE_integer("seq_len", 160, "document length")
flags.DEFINE_list("only", [], "run only these variants")
FLAGS = flags.FLAGS

TEMPLATE = " (Think briefly about what comes next.) "
INSTRUCTION = ("Briefly think between <think> and </think> about what should come next, then "
               "continue the text exactly where it stopped.\n\n")


def variants():
  base = dict(template="", prefix="", selection="uniform", marker="", thought_len=24,
              temperature=0.7, alts=True)
  v = {
      "no_template": {},
      "template_in_doc": dict(template=TEMPLATE),
      "instruction_prefix": dict(prefix=INSTRUCTION),
      "canonical_closer_only": dict(alts=False),
      "positions_low_logp": dict(selection="low_logp"),
      "positions_high_logp": dict(selection="high_logp"),
      "positions_answer": dict(selection="marker", marker="####"),
      "thought_len_8": dict(thought_len=8),
      "thought_len_64": dict(thought_len=64),
  }
  return {k: {**base, **x} for k, x in v.items()}


def _positions(lp_next, lens, k, min_prefix, mode, rng, cands):
  cuts = []
  for r in range(len(lens)):
    if mode == "marker":
      c = cands[r][cands[r] >= min_prefix]
      cuts.append(np.sort(rng.choice(c, k, replace=len(c) < k)))
      continue
    cand = np.arange(min_prefix, lens[r])
    if mode == "uniform":
      cuts.append(np.sort(rng.choice(cand, k, replace=False)))
      continue
    score = lp_next[r, cand - 1]  # log p(x_t | x_<t)
    order = cand[np.argsort(score if mode == "low_logp" else -score, kind="stable")]
    cuts.append(np.sort(order[:k]))
  return np.stack(cuts).astype(np.int32)


def measure(model, tok, docs, name, v):
  from flax import nnx
  from rlp import batches, sampler, thought_format
  fmt = thought_format.thought_format(tok, v["template"])
  cfg = sampler.SamplerConfig(group_size=FLAGS.group, max_thought_len=v["thought_len"],
                              temperature=v["temperature"], prompt_ids=fmt.prompt_ids,
                              close_ids=fmt.close_ids, close_alts=fmt.close_alts if v["alts"] else ())
  graphdef, params = nnx.split(model)
  pre = np.asarray(tok.encode(v["prefix"]), np.int32) if v["prefix"] else np.zeros(0, np.int32)
  rng = np.random.default_rng(0)
  marker = tok.encode(v["marker"]) if v["marker"] else None
  usable = [d[:FLAGS.seq_len] for d in docs]
  if marker:
    usable = [d for d in usable if (batches.marker_positions(d, marker) >= 16).any()]
  s_len = FLAGS.seq_len + len(pre)
  toks = np.zeros((len(usable), s_len), np.int32)
  lens = np.zeros(len(usable), np.int32)
  for i, d in enumerate(usable):
    toks[i, :len(d)] = d
    lens[i] = len(d)
  logits = np.asarray(jax.jit(lambda p, t: nnx.merge(graphdef, p)(t))(params, jnp.asarray(toks)))
  lp = logits - logits.max(-1, keepdims=True)
  lp = lp - np.log(np.exp(lp).sum(-1, keepdims=True))
  lp_next = np.take_along_axis(lp[:, :-1], toks[:, 1:, None], -1)[..., 0]
  cands = [batches.marker_positions(d, marker) if marker else None for d in usable]
  mode = v["selection"]
  cuts = _positions(lp_next, lens, FLAGS.positions, 16, mode, rng, cands)
  tgt = np.take_along_axis(toks, cuts, 1)
  s_plain = np.take_along_axis(lp_next, (cuts - 1), 1)
  acc_plain = np.take_along_axis(lp[:, :-1].argmax(-1), cuts - 1, 1) == tgt
  # the policy may see an instruction prefix before the document; the baseline never does
  ptoks = np.concatenate([np.broadcast_to(pre, (len(usable), len(pre))), toks[:, :FLAGS.seq_len]],
                         1) if len(pre) else toks
  t0 = time.time()
  ro = sampler.rollout(model, ptoks, cuts + len(pre), jax.random.key(1), cfg)
  secs = time.time() - t0
  s_pred = np.asarray(ro.s_pred)
  toks_ro, valid = np.asarray(ro.tokens), np.asarray(ro.valid)
  ended = collections.Counter()
  for b in range(toks_ro.shape[0]):
    for k in range(toks_ro.shape[1]):
      for g in range(toks_ro.shape[2]):
        if ro.truncated[b, k, g]:
          ended["truncated"] += 1
          continue
        seq = tuple(toks_ro[b, k, g][valid[b, k, g] > 0])
        which = next((i for i, c in enumerate(cfg.closers) if seq[-len(c):] == c), -1)
        ended["closer" if which == 0 else f"closer_alt{which}"] += 1
  after = collections.Counter(tok.decode([int(t)]) for t in np.asarray(ro.pred_argmax).ravel())
  return {"variant": name, **{k: v[k] for k in ("template", "selection", "thought_len")},
          "instruction_prefix": bool(v["prefix"]), "closer_alts": v["alts"],
          "positions": int(s_plain.size),
          "s_pred_mean": float(s_pred.mean()), "s_plain_mean": float(s_plain.mean()),
          "information_gain": float((s_pred.mean(-1) - s_plain).mean()),
          "acc_thought": float((np.asarray(ro.pred_argmax) == tgt[..., None]).mean()),
          "acc_plain": float(acc_plain.mean()),
          "thought_len_mean": float(np.asarray(ro.lengths).mean()),
          "truncated_frac": float(np.asarray(ro.truncated).mean()),
          "thought_endings": dict(ended), "top_after_think": after.most_common(6),
          "rollout_seconds_incl_compile": round(secs, 1)}


def main(argv):
  del argv
  from absl import logging
  logging.set_verbosity(logging.WARNING)
  from rlp import data, evaluate
  model, tok, desc = evaluate.load_for_eval(FLAGS.model)
  docs_ds, _ = data.open_documents("reasoning:eval", tok, num_docs=FLAGS.docs)
  docs = [np.asarray(docs_ds[i]) for i in range(len(docs_ds))]
  for name, v in variants().items():
    if FLAGS.only and name not in FLAGS.only:
      continue
    print(json.dumps(measure(model, tok, docs, name, v)), flush=True)


if __name__ == "__main__":
  app.run(main)
