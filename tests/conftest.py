import os

# Must happen before jax is imported anywhere: 8 fake CPU devices for mesh tests, and a persistent
# compilation cache (cuts the suite's time on CPU about 3x on re-runs).
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(_root, ".jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])


@pytest.fixture(scope="session")
def smollm2():
  """(model, tokenizer, path) of the real SmolLM2-135M-Instruct GGUF, loaded once per session."""
  import models
  path = models.smollm2_path()
  model, tok = models.load_gguf(path, with_tokenizer=True)
  return model, tok, path
