"""A run's memory plan per device, from shapes alone (nothing is allocated, no weights are read).

  rlp-bench memory --config=configs/smollm2_rlp.py [--config.rlp.group_size=8 ...]
      [--devices=N] [--device_memory_gb=G] [--model_shape=qwen3-1.7b] [--platform=gpu] [--check]

Parts, per device of the config's mesh (data x fsdp x tensor over N devices; default: this
machine's):
  params, EMA, reference (kl_beta > 0), Adam moments: the train state's leaves, sharded over
      fsdp x tensor as the run shards them (1-D leaves such as norm scales replicated);
  gradients: one more copy of the params' bytes, live during the update;
  rollout: the shared prefix K/V of each context, the thought K/V of every stream (prompt +
      thought buffer), and the sampling logits; contexts per rollout chunk = rlp.rollout_batch
      (0: all of the device's contexts at once);
  decode layer weights (CPU): the per-layer copy of the layers' weights that the unrolled decode
      loop reads, counted beside both phases;
  update: for one micro-batch (data.batch_size / devices on data x fsdp / rlp.minibatches /
      rlp.grad_accum documents), what the backward pass keeps: per-layer activations under
      model.remat (none: every intermediate; dots: the matmul outputs; full: each layer's input
      plus one layer recomputed) and the float32 logits over thought tokens with their gradient:
      all of them, or one train.loss_chunk of positions per stream at a time (-1 = auto resolves
      for --platform, default this machine's: chunks of 1024 on gpu / tpu, none on cpu);
  total = state + decode layer weights + max(rollout, update + gradients), against the device's
  memory (the rollout phase includes the prefix forward's residuals when one forward serves
  rollout and update).
The activation terms are estimates; --check compiles the run's step on this machine (abstract
inputs, nothing run) and prints XLA's own figure beside the estimate (check_ratio = estimate /
compiled), for configs that fit this machine.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

import models

GiB = 1024 ** 3

# Shapes of models whose weights are not on this machine (for configs with model.init=hf and no
# model.path), from their published config.json files.
SHAPES = {
    "qwen3-1.7b": models.ModelConfig(vocab_size=151936, d_model=2048, n_layers=28, n_heads=16,
                                     n_kv_heads=8, head_dim=128, d_ff=6144, qk_norm=True,
                                     tie_embeddings=True, rope_theta=1000000.0,
                                     architecture="qwen3"),
    "llama3-8b": models.ModelConfig(vocab_size=128256, d_model=4096, n_layers=32, n_heads=32,
                                    n_kv_heads=8, head_dim=128, d_ff=14336, tie_embeddings=False,
                                    rope_theta=500000.0),
}


from rlp.configuration import ConfigError  # noqa: E402 - bad input: one line, exit 2


class MemoryPlanError(ConfigError):
  pass


def model_config(config, shape: str | None = None) -> models.ModelConfig:
  """The config's model shape without loading weights: its own fields (random init), the GGUF
  header, the HF config.json, or a named shape."""
  from models import weights
  from rlp import configuration
  m = config.model
  rt = configuration._runtime(config)
  if shape:
    if shape not in SHAPES:
      raise MemoryPlanError(f"--model_shape={shape!r}: known shapes are {sorted(SHAPES)}")
    return SHAPES[shape].replace(**rt)
  if m.init == "random":
    return configuration.model_config(config)
  if m.init == "gguf":
    from models.gguf import open_reader
    path = _gguf_path(m)
    return weights.config_from_gguf(open_reader(path), path, **rt)
  if m.init == "hf" and m.path and os.path.isfile(os.path.join(m.path, "config.json")):
    import json
    with open(os.path.join(m.path, "config.json")) as f:
      return weights.config_from_hf(json.load(f), os.path.join(m.path, "config.json"), **rt)
  raise MemoryPlanError(
      f"model.init={m.init} with model.path={m.path!r}: no model shape to read here; pass "
      f"--config.model.path=DIR (an HF directory) or --model_shape=NAME ({', '.join(SHAPES)})")


def _prompt_and_closer(config) -> tuple[int, int, bool]:
  """(prompt tokens, closer tokens, exact) of the run's thought format; an estimate when the
  tokenizer is not on this machine."""
  from rlp import configuration
  try:
    tok = _tokenizer(config)
    s = configuration.sampler_config(config, tok)
    return len(s.prompt_ids), len(s.close_ids), True
  except Exception:  # noqa: BLE001 - no tokenizer here: typical lengths of '<think>' / '</think>'
    return 3, 4, False


def _gguf_path(m) -> str:
  return models.smollm2_path() if m.path == "smollm2" else m.path


def _tokenizer(config):
  """The run's tokenizer: data.tokenizer, else the weights' own (GGUF file or HF directory)."""
  from models.tokenizer import load_tokenizer
  m, d = config.model, config.data
  if d.tokenizer:
    return load_tokenizer(d.tokenizer)
  return load_tokenizer(_gguf_path(m) if m.init == "gguf" else m.path)


def _abstract_state(config, mc):
  from flax import nnx
  from rlp import configuration
  from rlp import trainer
  tx = configuration.optimizer(config)

  def make():
    return trainer.init_state(models.Transformer(mc, rngs=nnx.Rngs(0)), tx, config.seed,
                              config.rlp.kl_beta)
  return jax.eval_shape(make)


def _per_device(tree, shard: int) -> float:
  """Bytes per device of a tree of parameter-shaped leaves sharded over `shard` devices."""
  total = 0.0
  for x in jax.tree.leaves(tree):
    b = float(np.prod(x.shape)) * jnp.dtype(x.dtype).itemsize
    total += b / shard if len(x.shape) >= 2 else b
  return total


# What the backward keeps, in copies of three quantities: the matmul outputs of every token (q k
# v o, gate up down), the float32 attention score matrices (masked entries included), and the
# float32 logits of the thought tokens. none / dots: per layer; full: each layer's input is kept
# and one layer at a time is recomputed, so the first two count once. Fitted (non-negative least
# squares) to XLA's memory analysis of the compiled CPU step over five variants of the tiny
# config (seq 96/192, G 4/8, thought 8/24, batch 8/16 with d_ff 128/512; residuals 0-27%) and
# checked on SmolLM2 with --check (docs/performance.md). XLA on a GPU or TPU assigns buffers
# differently: run --check there on a reduced config before trusting a plan to the last 15%.
COPIES = {"none": (2.27, 4.27, 3.35), "dots": (0.72, 1.95, 4.53), "full": (1.00, 3.04, 4.86)}


def _activations(mc, tokens: float, attn_pairs: float, logit_tokens: float, remat: str,
                 e: int, tp: int) -> dict:
  """Bytes the update's backward keeps for `tokens` tokens whose queries attend to `attn_pairs`
  (query, key) pairs in all, with `logit_tokens` thought tokens scored over the vocabulary."""
  a, b, c = COPIES[remat]
  width = mc.n_heads * mc.head_dim + 2 * mc.n_kv_heads * mc.head_dim + mc.d_model + 3 * mc.d_ff
  layer = a * tokens * width * e + b * attn_pairs * mc.n_heads * 4
  if remat == "full":
    kept = mc.n_layers * tokens * mc.d_model * e + layer
  else:
    kept = mc.n_layers * layer
  return {"update_activations": kept / tp,
          "update_logits": c * logit_tokens * mc.vocab_size * 4 / tp}


def plan(config, *, n_devices: int | None = None, device_memory: float | None = None,
         shape: str | None = None, platform: str | None = None) -> dict:
  from rlp import configuration
  from rlp import sharding as sharding_lib
  from rlp import trainer
  mc = model_config(config, shape)  # first: its error names --model_shape
  checked = config
  if shape:  # the weights are not here: their path is not checked
    checked = config.copy_and_resolve_references()
    with checked.unlocked():
      checked.model.init = "random"
  configuration.validate(checked)
  n_devices = n_devices or jax.device_count()
  try:
    dp, fsdp, tp = sharding_lib.mesh_shape((config.mesh.data, config.mesh.fsdp, config.mesh.tensor),
                                           n_devices)
  except sharding_lib.MeshError as e:
    raise MemoryPlanError(f"config.mesh over {n_devices} devices: {e}") from None
  d, r = config.data, config.rlp
  e = jnp.dtype(mc.dtype).itemsize
  state = _abstract_state(config, mc)
  shard = fsdp * tp
  parts = {"params": _per_device(state.params, shard), "ema": _per_device(state.ema, shard),
           "reference": 0.0 if state.ref is None else _per_device(state.ref, shard),
           "optimizer": _per_device(state.opt_state, shard)}
  parts["gradients"] = parts["params"]
  contexts = d.batch_size / (dp * fsdp)
  if contexts < 1 or d.batch_size % (dp * fsdp):
    raise MemoryPlanError(f"data.batch_size={d.batch_size} does not split over data x fsdp = "
                          f"{dp * fsdp} devices")
  p_len, m_len, exact_fmt = _prompt_and_closer(config)
  n_streams = d.positions_per_doc * r.group_size
  thought = p_len + r.max_thought_len + m_len  # cached per stream: prompt + buffer
  chunk = (r.rollout_batch / (dp * fsdp)) if r.get("rollout_batch", 0) else contexts
  kv_heads_per_dev = max(1, mc.n_kv_heads // tp)
  kv_tok = mc.n_layers * 2 * kv_heads_per_dev * mc.head_dim * e  # bytes per cached token
  s = d.seq_len
  rollout = {"rollout_prefix_kv": chunk * s * kv_tok,
             "rollout_thought_kv": chunk * n_streams * thought * kv_tok,
             "rollout_logits": chunk * n_streams * mc.vocab_size * 4 * 3}
  cpt = config.objective == "cpt"
  shared = trainer.StepConfig(num_updates=r.num_updates, minibatches=r.minibatches,
                              grad_accum=r.get("grad_accum", 1),
                              rollout_batch=r.get("rollout_batch", 0))
  if not cpt and trainer._shares_prefix(shared, d.batch_size):
    # the step's one prefix forward serves rollout and update: its backward residuals are alive
    # through the rollout
    rollout["rollout_prefix_residuals"] = _activations(
        mc, contexts * s, contexts * s * s, 0, config.model.remat, e, tp)["update_activations"]
  on_cpu = (platform or jax.default_backend()) == "cpu"
  decode_w = 0.0
  if not cpt and on_cpu:
    # the CPU's decode loop runs its layers unrolled (rlp/sampler.py unrolls_layers) over a copy
    # of each layer's weights (in the compute dtype) made once per rollout. Counted beside both
    # phases: XLA:CPU's compiled step holds it at its peak (SmolLM2 RLP: compiled temp memory
    # +0.44 GiB when the loop became unrolled, the copy being 0.40 GiB)
    decode_w = (mc.num_params(include_embedding=False) - mc.d_model) * e / shard  # less final norm
  micro = contexts / (1 if cpt else r.minibatches * r.get("grad_accum", 1))
  if cpt:
    tokens, pairs, logit_tokens = micro * s, micro * s * s, micro * s
  else:  # the prefix recomputed, then every stream's thought over [prefix, thought]
    t_tok = micro * n_streams * thought
    tokens = micro * s + t_tok
    pairs = micro * s * s + t_tok * (s + thought)
    logit_tokens = t_tok
  update = _activations(mc, tokens, pairs, logit_tokens, config.model.remat, e, tp)
  lchunk = config.train.loss_chunk
  if lchunk < 0:  # auto: the head in chunks on accelerators, the full logits on CPU
    lchunk = 0 if on_cpu else 1024
  if lchunk:  # one chunk of positions' float32 logits, their softmax and gradient at a time
    live = micro * (s if cpt else n_streams) * min(lchunk, s if cpt else thought)
    update["update_logits"] = 3 * live * mc.vocab_size * 4 / tp
  elif r.kl_beta > 0 and not cpt:  # the reference's logits over the same thoughts
    update["update_logits"] *= 1 + 1 / COPIES[config.model.remat][2]
  state_b = sum(parts[k] for k in ("params", "ema", "reference", "optimizer"))
  roll_b = 0.0 if cpt else sum(rollout.values())
  upd_b = sum(update.values()) + parts["gradients"]
  total = state_b + decode_w + max(roll_b, upd_b)
  if device_memory is None:
    device_memory = _device_memory()
  out = {"bench": "memory", "model_params": mc.num_params(), "devices": n_devices,
         "mesh": {"data": dp, "fsdp": fsdp, "tensor": tp}, "contexts_per_device": contexts,
         "rollout_contexts_per_chunk": chunk if not cpt else 0,
         "update_documents_per_micro_batch": micro, "remat": config.model.remat,
         "dtype": mc.dtype, "thought_format_exact": exact_fmt, "loss_chunk": lchunk,
         **{f"{k}_gib": v / GiB for k, v in {**parts, **({} if cpt else rollout), **update}.items()},
         **({"decode_layer_weights_gib": decode_w / GiB} if decode_w else {}),
         "state_gib": state_b / GiB, "rollout_gib": roll_b / GiB,
         "update_gib": upd_b / GiB, "total_gib": total / GiB,
         "phase_peak": "rollout" if roll_b > upd_b else "update"}
  if device_memory:
    out["device_memory_gib"] = device_memory / GiB
    out["fits"] = bool(total <= device_memory)
  return out


def _device_memory() -> float | None:
  dev = jax.local_devices()[0]
  try:
    stats = dev.memory_stats() or {}
  except Exception:  # noqa: BLE001 - not every backend reports it
    stats = {}
  if stats.get("bytes_limit"):
    return float(stats["bytes_limit"])
  if dev.platform == "cpu":
    try:
      return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError):
      return None
  return None


def compiled(config) -> dict:
  """XLA's memory analysis of the run's step compiled for this machine's devices with abstract
  inputs (nothing is allocated or run): arguments + outputs - aliased + temporaries, per device
  (an SPMD program's figures are those of one device's program)."""
  from flax import nnx
  from rlp import batches
  from rlp import configuration
  from rlp import sharding as sharding_lib
  from rlp import trainer
  mc = model_config(config)
  tok = _tokenizer(config)
  mesh = sharding_lib.make_mesh((config.mesh.data, config.mesh.fsdp, config.mesh.tensor))
  tx = configuration.optimizer(config)
  d = config.data
  with jax.set_mesh(mesh):
    abstract_model = nnx.eval_shape(lambda: models.Transformer(mc, rngs=nnx.Rngs(0)))
    state = _abstract_state(config, mc)
    sh = sharding_lib.state_shardings(state, tx, mesh, sharding_lib.logical_axes(abstract_model))
    state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                         state, sh)
    def spec(*shape, dtype=jnp.int32):
      return jax.ShapeDtypeStruct(shape, dtype,
                                  sharding=sharding_lib.batch_sharding(mesh, len(shape)))
    b, s = d.batch_size, d.seq_len
    if config.objective == "cpt":
      batch = batches.LMBatch(inputs=spec(b, s), targets=spec(b, s),
                              loss_mask=spec(b, s, dtype=jnp.float32), segment_ids=spec(b, s),
                              positions=spec(b, s))
    else:
      batch = batches.DocBatch(tokens=spec(b, s), lengths=spec(b),
                               cuts=spec(b, d.positions_per_doc))
    tok_bytes = tok.token_bytes() if config.objective == "rpt" else None
    step = trainer.make_step(nnx.graphdef(abstract_model), tx, configuration.step_config(config, tok),
                             tokenizer_bytes=tok_bytes)
    ma = step.lower(state, batch).compile().memory_analysis()
  total = (ma.argument_size_in_bytes + ma.output_size_in_bytes - ma.alias_size_in_bytes
           + ma.temp_size_in_bytes)
  return {"compiled_total_gib": total / GiB, "compiled_temp_gib": ma.temp_size_in_bytes / GiB,
          "compiled_argument_gib": ma.argument_size_in_bytes / GiB}


def run(config, n_devices=None, device_memory_gb=None, shape=None, check=False,
        platform=None) -> dict:
  if config is None:
    raise MemoryPlanError("rlp-bench memory needs --config=FILE (e.g. configs/smollm2_rlp.py)")
  out = plan(config, n_devices=n_devices,
             device_memory=None if device_memory_gb is None else device_memory_gb * GiB,
             shape=shape, platform=platform)
  if check:
    if n_devices not in (None, jax.device_count()) or shape:
      raise MemoryPlanError("--check compiles for this machine's devices and the config's own "
                            "model: drop --devices / --model_shape")
    out.update(compiled(config))
    out["check_ratio"] = out["total_gib"] / out["compiled_total_gib"]
  return out
