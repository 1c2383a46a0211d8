"""The decoder family's configuration: one frozen dataclass for Llama / Qwen2 / Qwen3 / SmolLM2."""

from __future__ import annotations

import dataclasses
from typing import Any

REMAT_POLICIES = ("none", "full", "dots")
ATTENTION_IMPLS = ("xla", "cudnn")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  vocab_size: int = 256
  d_model: int = 64
  n_layers: int = 2
  n_heads: int = 4
  n_kv_heads: int = 2
  head_dim: int = 16
  d_ff: int = 128
  rope_theta: float = 10000.0
  # Llama-3 style scaling: (factor, low_freq_factor, high_freq_factor, original_max_positions).
  rope_scaling: tuple[float, float, float, int] | None = None
  norm_eps: float = 1e-5
  tie_embeddings: bool = True
  qk_norm: bool = False  # Qwen3
  attn_bias: bool = False  # Qwen2
  max_seq_len: int = 2048
  dtype: str = "float32"  # compute dtype; params are always float32
  scan_layers: bool = True
  remat: str = "none"
  attention: str = "xla"  # "cudnn" routes through jax.nn.dot_product_attention(implementation="cudnn")
  architecture: str = "llama"  # informational: llama | qwen2 | qwen3

  def __post_init__(self):
    errors = []
    for name in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "d_ff",
                 "max_seq_len"):
      if getattr(self, name) < 1:
        errors.append(f"ModelConfig.{name} must be >= 1 (got {getattr(self, name)})")
    if self.n_kv_heads >= 1 and self.n_heads % self.n_kv_heads:
      errors.append(f"ModelConfig.n_heads ({self.n_heads}) must be a multiple of n_kv_heads "
                    f"({self.n_kv_heads})")
    if self.head_dim % 2:
      errors.append(f"ModelConfig.head_dim must be even for RoPE (got {self.head_dim})")
    if self.remat not in REMAT_POLICIES:
      errors.append(f"ModelConfig.remat must be one of {REMAT_POLICIES} (got {self.remat!r})")
    if self.attention not in ATTENTION_IMPLS:
      errors.append(f"ModelConfig.attention must be one of {ATTENTION_IMPLS} (got {self.attention!r})")
    if self.dtype not in ("float32", "bfloat16", "float16"):
      errors.append(f"ModelConfig.dtype must be float32, bfloat16 or float16 (got {self.dtype!r})")
    if errors:
      raise ValueError("; ".join(errors))

  def replace(self, **kw: Any) -> "ModelConfig":
    return dataclasses.replace(self, **kw)

  def num_params(self, include_embedding: bool = True) -> int:
    d, f, h, kv, hd = self.d_model, self.d_ff, self.n_heads, self.n_kv_heads, self.head_dim
    per_layer = d * hd * (h + 2 * kv) + h * hd * d + 3 * d * f + 2 * d
    per_layer += (h + 2 * kv) * hd if self.attn_bias else 0
    per_layer += 2 * hd if self.qk_norm else 0
    n = self.n_layers * per_layer + d
    if include_embedding:
      n += self.vocab_size * d * (1 if self.tie_embeddings else 2)
    return n

  def flops_per_token(self, seq_len: int, training: bool = True) -> float:
    """MaxText-style matmul FLOPs per token: 6N (2N forward) plus causal attention (halved)."""
    n = self.num_params(include_embedding=False) + self.vocab_size * self.d_model  # LM head matmul
    attn = 2 * 2 * self.n_layers * self.n_heads * self.head_dim * seq_len / 2  # QK^T and AV, causal
    mult = 3 if training else 1
    return mult * (2 * n + attn)
