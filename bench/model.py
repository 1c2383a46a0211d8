"""Model train step (forward + backward + AdamW): tokens/s and MFU; optional PyTorch peer."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import models
from bench import common
from rlp import metrics as M
from rlp import trainer as T

TINY = models.ModelConfig(vocab_size=260, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2,
                          head_dim=16, d_ff=128)


def load(name: str, **runtime):
  if name == "tiny":
    return models.Transformer(TINY.replace(**runtime), rngs=nnx.Rngs(0))
  if name == "smollm2":
    return models.load_gguf(models.smollm2_path(), **runtime)
  return models.load_hf(name, **runtime)


def train_step_fn(model, batch, seq, lr=1e-5):
  tx = T.make_optimizer(lr, grad_clip=0.0)
  state = T.init_state(model, tx)
  step = T.make_step(nnx.graphdef(model), tx, T.StepConfig(objective="cpt"))
  x = jnp.asarray(np.random.default_rng(0).integers(0, model.config.vocab_size, (batch, seq + 1)),
                  jnp.int32)
  b = {"inputs": x[:, :-1], "targets": x[:, 1:], "loss_mask": jnp.ones((batch, seq))}
  holder = [state]

  def run():
    holder[0], m, _ = step(holder[0], b)
    jax.block_until_ready(m["loss"])
  return run


def torch_train_step_fn(model, batch, seq):
  """The same config in transformers (float32, AdamW), via save_hf + from_pretrained."""
  import tempfile
  import torch
  import transformers
  torch.manual_seed(0)
  with tempfile.TemporaryDirectory() as d:
    models.save_hf(model, d)
    ref = transformers.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32)
  ref.train()
  opt = torch.optim.AdamW(ref.parameters(), lr=1e-5, weight_decay=0.0)
  x = torch.randint(0, model.config.vocab_size, (batch, seq + 1))

  def run():
    out = ref(input_ids=x[:, :-1], labels=x[:, :-1])
    out.loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
  return run


def run(model_name="smollm2", batch=2, seq=256, peer=False, iters=3, dtype="float32",
        remat="none"):
  model = load(model_name, dtype=dtype, remat=remat)
  cfg = model.config
  ours = train_step_fn(model, batch, seq)
  fns = {"ours": ours}
  if peer:
    fns["peer"] = torch_train_step_fn(model, batch, seq)
  for f in fns.values():
    f()  # compile / warm up
  best = common.alternate(fns, rounds=iters)
  tokens = batch * seq
  peak, src = M.device_peak_flops(dtype)
  flops = tokens * cfg.flops_per_token(seq, training=True)
  out = {"bench": "model", "model": model_name, "batch": batch, "seq": seq, "dtype": dtype,
         "step_seconds": best["ours"], "tokens_per_sec": tokens / best["ours"],
         "flops_per_token": cfg.flops_per_token(seq, training=True),
         "mfu": flops / best["ours"] / peak, "peak_flops": peak, "peak_source": src,
         **common.device_info()}
  if peer:
    out.update(peer_step_seconds=best["peer"], peer_tokens_per_sec=tokens / best["peer"],
               peer_mfu=flops / best["peer"] / peak, speedup_vs_peer=best["peer"] / best["ours"])
  return out
