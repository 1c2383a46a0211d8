"""One RLP step split into rollout, EMA scoring and update; its ratio to a CPT step over the same
input tokens; optionally a TRL-style PyTorch RLP step (generate, teacher-forced scoring, EMA copy,
clipped surrogate, backward, AdamW) measured side by side. With profile=True (`rlp-bench rlp-step
--profile`), also where the update, the EMA scoring and the CPT step spend their time, per kind of
XLA operation (bench/profile.py; the decode step's profile is `rlp-bench sampler --profile`)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bench import common
from bench.model import load, train_step_fn
from models import backend
from rlp import policy
from rlp import sampler as sampler_lib
from rlp import trainer


def _setup(model, contexts, context_len, group, thought, seed=0, unroll_layers=None):
  rng = np.random.default_rng(seed)
  vocab = model.config.vocab_size
  tokens = jnp.asarray(rng.integers(0, min(vocab, 20000), (contexts, context_len)), jnp.int32)
  pos = jnp.asarray(rng.integers(context_len // 2, context_len - 1, (contexts, 1)), jnp.int32)
  scfg = sampler_lib.SamplerConfig(group_size=group, max_thought_len=thought, temperature=1.0,
                                   prompt_ids=(1,), close_ids=(vocab - 1, 0, 0),
                                   unroll_layers=unroll_layers)
  return {"tokens": tokens, "lengths": jnp.full((contexts,), context_len, jnp.int32),
          "cuts": pos}, trainer.StepConfig(sampler=scfg)


def torch_rlp_step_fn(model, batch, group, thought, lr=1e-6, eps=0.2, tau=0.999):
  """The TRL/open-r1 recipe users would otherwise run, in transformers on the same machine."""
  import copy
  import torch
  from bench.model import torch_peer
  pol, device, autocast, sync = torch_peer(model)
  ema = copy.deepcopy(pol).eval()
  for p in ema.parameters():
    p.requires_grad_(False)
  opt = torch.optim.AdamW(pol.parameters(), lr=lr, weight_decay=0.0)
  toks = np.asarray(batch["tokens"])
  pos = np.asarray(batch["cuts"])[:, 0]
  close = torch.tensor([model.config.vocab_size - 1], device=device)

  def run():
    prompts = [torch.as_tensor(np.concatenate([toks[b, :pos[b]], [1]])) for b in range(len(pos))]
    width = max(len(p) for p in prompts)
    ids = torch.zeros((len(prompts), width), dtype=torch.long, device=device)
    am = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
      ids[i, width - len(p):], am[i, width - len(p):] = p, 1
    pol.eval()
    with torch.no_grad(), autocast():  # rollout: G thoughts per context
      gen = pol.generate(input_ids=ids.repeat_interleave(group, 0),
                         attention_mask=am.repeat_interleave(group, 0), max_new_tokens=thought,
                         min_new_tokens=thought, do_sample=True, top_k=0, temperature=1.0,
                         pad_token_id=0)
    thoughts = gen[:, width:]
    pol.train()
    targets = torch.as_tensor(toks[np.arange(len(pos)), pos], device=device)
    targets = targets.repeat_interleave(group)
    seq = torch.cat([gen, close.repeat(len(gen), 1), targets[:, None]], 1)
    mask = torch.cat([am.repeat_interleave(group, 0), torch.ones_like(seq[:, width:])], 1)
    keep = thought + 3  # logits of the thought, </think> and x_t positions only (TRL's logits_to_keep)
    with torch.no_grad(), autocast():  # old log-probs and S_pred (teacher forced), S_ema on the plain prefix
      lp = torch.log_softmax(pol(seq, attention_mask=mask, logits_to_keep=keep).logits.float(), -1)
      old = lp[:, :thought].gather(-1, thoughts[..., None])[..., 0]
      s_pred = lp[:, -2].gather(-1, targets[:, None])[:, 0]
      elp = torch.log_softmax(ema(ids[:, :-1], attention_mask=am[:, :-1],
                                     logits_to_keep=1).logits[:, -1].float(), -1)
      s_ema = elp.gather(-1, targets[::group, None])[:, 0].repeat_interleave(group)
    r = (s_pred - s_ema).view(-1, group)
    adv = (group / (group - 1) * (r - r.mean(1, keepdim=True))).view(-1, 1)
    with autocast():
      lp = torch.log_softmax(pol(seq, attention_mask=mask, logits_to_keep=keep).logits.float(), -1)
    new = lp[:, :thought].gather(-1, thoughts[..., None])[..., 0]
    ratio = torch.exp(new - old)
    loss = -torch.minimum(ratio * adv, ratio.clamp(1 - eps, 1 + eps) * adv).mean(1).mean()
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    with torch.no_grad():
      for pe, pp in zip(ema.parameters(), pol.parameters()):
        pe.lerp_(pp, 1 - tau)
    sync()
  return run


def run(model_name="smollm2", contexts=4, context_len=256, group=4, thought=64, peer=False,
        iters=2, dtype="float32", remat="none", attention=None, grad_accum=1, unroll_layers=None,
        profile=False):
  model = load(model_name, dtype=dtype, remat=remat, attention=attention)
  graphdef = nnx.graphdef(model)
  batch, cfg = _setup(model, contexts, context_len, group, thought, unroll_layers=unroll_layers)
  cfg = dataclasses.replace(cfg, grad_accum=grad_accum)
  tx = trainer.make_optimizer(1e-6)
  # One donated train state serves every part (a 1B model's params + EMA + Adam is ~20 GB: a second
  # copy per part does not fit on one accelerator); the CPT step is measured after it is freed.
  holder = [trainer.init_state(model, tx)]
  step = trainer.make_step(graphdef, tx, cfg)

  def full():
    holder[0], m, _ = step(holder[0], batch)
    jax.block_until_ready(m["loss"])

  rollout = backend.jit(lambda p, k: sampler_lib.rollout_fn(nnx.merge(graphdef, p),
                                                            batch["tokens"], batch["cuts"], k,
                                                            cfg.sampler))
  score = backend.jit(lambda p: trainer.ema_logp_at(p, graphdef, batch["tokens"], batch["cuts"]))
  ro = rollout(holder[0].params, jax.random.key(0))
  mb = trainer.UpdateBatch.from_rollout(batch["tokens"], batch["lengths"], batch["cuts"], ro,
                                        adv=jnp.ones(ro.s_pred.shape))
  del ro
  phases_cfg = trainer.resolve(cfg)  # as make_step builds the step

  @backend.jit(donate_argnums=0)
  def update(st):
    (loss, _), g = policy.policy_grads(st.params, graphdef, mb, phases_cfg, None)
    return trainer.apply_update(st, g, loss, tx, phases_cfg)[0]

  def update_run():
    holder[0] = update(holder[0])
    jax.block_until_ready(holder[0].step)

  parts = {"rollout": lambda: jax.block_until_ready(rollout(holder[0].params,
                                                            jax.random.key(1)).mask),
           "score": lambda: jax.block_until_ready(score(holder[0].params)),
           "update": update_run,
           "step": full}
  for f in parts.values():
    f()
  best = common.alternate(parts, rounds=iters)
  profiles = {}
  if profile:  # after the timings: the trace's events slow the calls they record
    from bench.profile import call_profile
    profiles.update(call_profile(update_run, update.lower(holder[0]).compile().as_text(),
                                 name="update", seconds=best["update"]))
    profiles.update(call_profile(parts["score"], score.lower(holder[0].params).compile().as_text(),
                                 name="score", seconds=best["score"]))
  cuts_np = np.asarray(batch["cuts"])

  def rollout_at(t):
    c = dataclasses.replace(cfg.sampler, max_thought_len=t)
    f = backend.jit(lambda p, k: sampler_lib.rollout_fn(nnx.merge(graphdef, p), batch["tokens"],
                                                        batch["cuts"], k, c).mask)
    return lambda: jax.block_until_ready(f(holder[0].params, jax.random.key(2)))
  decode = common.decode_over_bound(
      model, rollout_at, thought=thought, streams=contexts * cuts_np.shape[1] * group,
      prefix_kv_tokens=float(cuts_np.max(1).sum()), mean_prefix=float(cuts_np.mean()),
      dtype=dtype, iters=iters, unroll=common.decode_layers(cfg.sampler) == "unroll")
  import gc
  parts.clear()
  del update, rollout, score, mb
  holder[0] = None
  gc.collect()
  cpt = train_step_fn(model, contexts, context_len)
  cpt()
  best["cpt"] = common.alternate({"cpt": cpt}, rounds=iters)["cpt"]
  if profile:
    profiles.update(call_profile(cpt, cpt.hlo_text(), name="cpt", seconds=best["cpt"]))
  del cpt
  gc.collect()
  if peer:
    # Both stacks at once do not fit in 24 GiB with SmolLM2 (ours ~17 GiB peak, torch ~7 GiB):
    # free ours and hand the memory back to the kernel (the malloc settings would keep it), time
    # the peer, then time our full step again (ours first, peer, ours again).
    from launch.cli import release_freed_memory
    jax.clear_caches()
    gc.collect()
    release_freed_memory()
    torch_step = torch_rlp_step_fn(model, batch, group, thought)
    torch_step()
    best["peer"] = common.alternate({"peer": torch_step}, rounds=iters)["peer"]
    del torch_step
    gc.collect()
    release_freed_memory()
    holder[0] = trainer.init_state(model, tx)
    step = trainer.make_step(graphdef, tx, cfg)
    full()
    best["step"] = min(best["step"], common.alternate({"s": full}, rounds=iters)["s"])
  thought_tokens = contexts * group * thought
  doc_tokens = contexts * context_len
  out = {"bench": "rlp-step", "model": model_name, "dtype": dtype, "grad_accum": grad_accum,
         "decode_layers": common.decode_layers(cfg.sampler),
         "contexts": contexts, "context_len": context_len, "group": group, "thought": thought,
         "step_seconds": best["step"], "rollout_seconds": best["rollout"],
         "score_seconds": best["score"], "update_seconds": best["update"],
         "rollout_tokens_per_sec": thought_tokens / best["rollout"],
         "score_tokens_per_sec": doc_tokens / best["score"],
         "update_tokens_per_sec": (thought_tokens + doc_tokens) / best["update"],
         "cpt_step_seconds": best["cpt"], "rlp_over_cpt": best["step"] / best["cpt"],
         **decode, **profiles, **common.device_info()}
  if peer:
    out.update(peer_step_seconds=best["peer"], speedup_vs_peer=best["peer"] / best["step"])
  return out
