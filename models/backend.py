"""Per-backend XLA compile options for the programs this codebase jits.

`jit` is `jax.jit` plus `compiler_options()` for the backend the program runs on, decided at the
first call (the backend is only known once jax has started, and a module-level decorator runs at
import, before `jax.distributed.initialize` may be called).

On CPU: `xla_cpu_copy_insertion_use_region_analysis`. A decode loop carries its K/V caches through
a `while` loop, reads them for the attention and writes the new keys into them in place. XLA:CPU's
default copy insertion cannot prove that the read comes before the write, so it copies every
layer's thought cache twice per decode step (SmolLM2, 16 streams: 120 cache copies in the loop
body); the region-based analysis, XLA's GPU default, proves it and leaves none. Same tokens;
compiling takes longer (docs/performance.md has the figures).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax

CPU_OPTIONS = {"xla_cpu_copy_insertion_use_region_analysis": True}


def compiler_options(platform: str | None = None) -> dict[str, Any] | None:
  """The XLA options this codebase compiles with on `platform` (default: jax's backend)."""
  platform = platform or jax.default_backend()
  return dict(CPU_OPTIONS) if platform == "cpu" else None


class _BackendJit:
  """`jax.jit(fn, compiler_options=compiler_options(), **kw)`, made on the first use."""

  def __init__(self, fn: Callable, kw: dict):
    functools.update_wrapper(self, fn)
    self._fn, self._kw, self._jitted = fn, kw, None

  def _get(self):
    if self._jitted is None:
      options = compiler_options(self._kw.get("backend"))  # jit's own backend=, else jax's
      self._jitted = jax.jit(self._fn, compiler_options=options, **self._kw)
    return self._jitted

  def __call__(self, *args, **kwargs):
    return self._get()(*args, **kwargs)

  def __getattr__(self, name):  # lower, eval_shape, _cache_size, ...
    return getattr(self._get(), name)


def jit(fn: Callable | None = None, **kw):
  """`jax.jit` with this backend's compiler options; also a decorator: `@jit(static_argnames=...)`.
  Passing compiler_options yourself overrides them."""
  if fn is None:
    return functools.partial(jit, **kw)
  if "compiler_options" in kw:
    return jax.jit(fn, **kw)
  return _BackendJit(fn, kw)
