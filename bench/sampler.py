"""Thought rollouts: shared-prefix vs naive prefix-copy sampler, and Hugging Face `generate`.

Setting: documents of 512 tokens, k = 4 positions, G = 4 thoughts, T = 64 tokens.
Generated tokens per second count every sampled thought token. decode_over_bound: the measured
decode step (marginal time per token between thoughts of T and T/2) over its lower bound in the
same run (streaming the weights and the needed KV cache once at the measured bandwidth, or the
step's matmuls at the measured matmul rate, whichever is larger; bench/common.py).
decode_matmuls_seconds: the step's weight matmuls alone at the same number of rows, with the
layers scanned or unrolled as the decode loop runs them (decode_layers), timed (the
part of the gap the device's matmul kernels set; decode_over_matmuls is the rest). With
profile=True (`--profile`), also where a decode step's time goes per kind of XLA operation
(bench/profile.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from bench import common
from bench.model import load
from rlp import sampler


def _inputs(vocab, docs, doc_len, positions, seed=0):
  rng = np.random.default_rng(seed)
  d = jnp.asarray(rng.integers(0, min(vocab, 20000), (docs, doc_len)), jnp.int32)
  cuts = np.sort(rng.integers(doc_len // 4, doc_len - 1, (docs, positions)), axis=1)
  return d, jnp.asarray(cuts, jnp.int32)


def hf_generate_fn(model, docs_np, cuts_np, group, thought):
  """transformers generate with KV cache: every (document, position, thought) as a left-padded row."""
  import torch
  from bench.model import torch_peer
  ref, device, autocast, sync = torch_peer(model)
  ref.eval()
  rows = [docs_np[b, :t] for b in range(docs_np.shape[0]) for t in cuts_np[b] for _ in range(group)]
  width = max(len(r) for r in rows)
  ids = torch.zeros((len(rows), width), dtype=torch.long)
  mask = torch.zeros_like(ids)
  for i, r in enumerate(rows):
    ids[i, width - len(r):] = torch.as_tensor(r)
    mask[i, width - len(r):] = 1
  ids, mask = ids.to(device), mask.to(device)

  def run():
    with torch.no_grad(), autocast():
      out = ref.generate(input_ids=ids, attention_mask=mask, max_new_tokens=thought,
                         min_new_tokens=thought, do_sample=True, temperature=1.0, top_k=0,
                         top_p=1.0, pad_token_id=0, use_cache=True)
    sync()
    return (out.shape[1] - width) * len(rows)
  return run


def run(model_name="smollm2", docs=1, doc_len=512, positions=4, group=4, thought=64, peer=False,
        iters=2, dtype="float32", profile=False, unroll_layers=None):
  model = load(model_name, dtype=dtype)
  d, cuts = _inputs(model.config.vocab_size, docs, doc_len, positions)
  # a </think> the model will not sample, so every thought runs to the full length T
  cfg = sampler.SamplerConfig(group_size=group, max_thought_len=thought, temperature=1.0,
                              prompt_ids=(1,), close_ids=(model.config.vocab_size - 1, 0, 0),
                              unroll_layers=unroll_layers)
  counts = {}

  def ours(naive):
    c = sampler.SamplerConfig(**{**cfg.__dict__, "naive": naive})

    def f():
      ro = sampler.rollout(model, d, cuts, jax.random.key(0), c)
      counts["naive" if naive else "shared"] = int(jax.block_until_ready(ro.mask).sum())
    return f

  fns = {"shared": ours(False), "naive": ours(True)}
  if peer:
    hf = hf_generate_fn(model, np.asarray(d), np.asarray(cuts), group, thought)

    def hf_run():
      counts["hf"] = hf()
    fns["hf"] = hf_run
  for f in fns.values():
    f()
  best = common.alternate(fns, rounds=iters)
  out = {"bench": "sampler", "model": model_name, "dtype": dtype, "docs": docs, "doc_len": doc_len,
         "decode_layers": common.decode_layers(cfg),
         "positions": positions, "group": group, "thought": thought,
         "shared_prefix_tokens_per_sec": counts["shared"] / best["shared"],
         "naive_tokens_per_sec": counts["naive"] / best["naive"],
         "shared_over_naive": (counts["shared"] / best["shared"]) / (counts["naive"] / best["naive"]),
         **common.device_info()}
  cuts_np = np.asarray(cuts)

  def cfg_at(t):
    return sampler.SamplerConfig(**{**cfg.__dict__, "max_thought_len": t})

  def rollout_at(t):
    c = cfg_at(t)
    return lambda: jax.block_until_ready(sampler.rollout(model, d, cuts, jax.random.key(0), c).mask)
  out.update(common.decode_over_bound(
      model, rollout_at, thought=thought, streams=docs * positions * group,
      prefix_kv_tokens=float(cuts_np.max(1).sum()), mean_prefix=float(cuts_np.mean()),
      dtype=dtype, iters=iters, unroll=common.decode_layers(cfg) == "unroll"))
  if profile:
    from flax import nnx
    from bench.profile import decode_profile

    def hlo_at(t):  # the program rollout_at(t) runs
      graphdef, params = nnx.split(model)
      return sampler.rollout_jit.lower(graphdef, params, d, cuts, jax.random.key(0),
                                        cfg_at(t)).compile().as_text()
    out.update(decode_profile(rollout_at, hlo_at, thought=thought,
                              step_seconds=out["decode_step_seconds"]))
  if peer:
    out["hf_generate_tokens_per_sec"] = counts["hf"] / best["hf"]
    out["shared_over_hf_generate"] = out["shared_prefix_tokens_per_sec"] / out["hf_generate_tokens_per_sec"]
  return out
