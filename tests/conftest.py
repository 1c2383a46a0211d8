import os

# The suite's time is mostly compiling small programs. FAST_COMPILE: XLA:CPU's LLVM backend at -O0
# and its older elemental kernel emitter instead of the fusion emitters, which together compile
# small programs several times faster and run them as fast (README, Tests); real-size programs run
# slower at -O0, so full_optimization below drops both. A subprocess that needs its own device
# count takes xla_flags_for(n).
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"
# Must happen before jax is imported anywhere: 8 fake CPU devices for mesh tests, FAST_COMPILE, and
# a persistent compilation cache (cuts the suite's time on CPU about 3x on re-runs).
os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count=8 {FAST_COMPILE}")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(_root, ".jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Under `make test` two workers share two cores: torch (the parity tests' reference) at one
# thread, so its OpenMP threads do not spin against the other worker's XLA threads.
if os.environ.get("PYTEST_XDIST_WORKER"):
  os.environ.setdefault("OMP_NUM_THREADS", "1")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])


def xla_flags_for(devices: int | None) -> str:
  """XLA_FLAGS for a subprocess of the suite: its flags (FAST_COMPILE, unless full_optimization
  dropped them) with `devices` fake CPU devices instead of 8 (None: the one real device)."""
  keep = [f for f in os.environ.get("XLA_FLAGS", "").split()
          if not f.startswith("--xla_force_host_platform_device_count")]
  return " ".join(([f"--xla_force_host_platform_device_count={devices}"] if devices else []) + keep)


@pytest.fixture(scope="session")
def smollm2():
  """(model, tokenizer, path) of the real SmolLM2-135M-Instruct GGUF, loaded once per session."""
  import models
  path = models.smollm2_path()
  model, tok = models.load_gguf(path, with_tokenizer=True)
  return model, tok, path


# The longest test files, longest first (measured on 2 cores). `make test` hands whole files to
# two workers in collection order (--dist loadfile --no-loadscope-reorder): starting the long ones
# first leaves the short ones to even out the end, instead of a long file running alone at the end.
# xdist gives a worker its next file once at most two of its tests are pending: the second
# worker (notebook 02, one test) takes file 3 at once, the first takes file 4 near the end of the
# notebooks. So the two files that run SmolLM2 through torch or at full optimisation for minutes
# (the quickstart notebook, the harness) run one after the other on the first worker instead of
# slowing each other down (measured in CI: the harness parity test 129 s, 336 s beside 01).
_LONGEST_FIRST = ("notebooks/test_notebooks.py", "notebooks/test_notebook_ablations.py",
                  "rlp/test_trainer.py", "rlp/test_harness.py", "rlp/test_evaluate.py",
                  "launch/test_fault_tolerance.py", "launch/test_train.py", "launch/test_cli.py",
                  "launch/test_bench.py", "models/test_smollm2.py", "rlp/test_diversity.py",
                  "rlp/test_sampler.py", "rlp/test_scale.py", "models/test_decode.py",
                  "launch/test_data_cli.py")


def pytest_collection_modifyitems(items):
  def rank(item):
    path = item.nodeid.split("::")[0]
    return next((i for i, f in enumerate(_LONGEST_FIRST) if path.endswith(f)),
                len(_LONGEST_FIRST))
  items.sort(key=rank)  # stable: the order within a file, and of the other files, is kept


@pytest.fixture
def full_optimization(monkeypatch):
  """For a test whose subprocesses run the real model at length: they inherit the suite's XLA
  flags without FAST_COMPILE (SmolLM2's programs execute ~2x slower at -O0)."""
  monkeypatch.setenv("XLA_FLAGS", " ".join(
      f for f in os.environ.get("XLA_FLAGS", "").split() if f not in FAST_COMPILE.split()))
