"""Flax NNX decoder family and weight import/export."""

from models.config import ModelConfig
from models.transformer import KVCache, Transformer
from models.weights import load_gguf, load_hf, save_hf, smollm2_path, WeightsError
from models.generate import greedy_generate

__all__ = ["ModelConfig", "Transformer", "KVCache", "load_hf", "save_hf", "load_gguf",
           "smollm2_path", "WeightsError", "greedy_generate"]
