"""What every console script shares: --help that lists the script's flags, one-line errors for bad
input, and exit codes a scheduler can act on.

Exit codes (also in README):
  0    finished (or, for rlp-train, the run was already complete)
  1    an unexpected error (a bug: the traceback is printed)
  2    bad input: flags, config, data, weights, checkpoint or paths; the line says what and how
  3    training stopped on its own (e.g. repeated non-finite losses); checkpoints are kept
  130  interrupted by Ctrl-C (SIGINT), 143 by SIGTERM: rlp-train wrote a checkpoint first when it
       had started training; rerun the same command to resume
"""

from __future__ import annotations

import os
import re
import signal
import sys

from absl import app, flags

EXIT_BAD_INPUT = 2
EXIT_FAILED = 3
_HELP = ("-h", "--help", "-help", "--h", "-?")


class Interrupted(Exception):
  """A run stopped by a signal after saving what it had (exit 128 + signal)."""

  def __init__(self, signum: int, message: str):
    super().__init__(message)
    self.signum = signum


def bad_input_errors() -> tuple[type[BaseException], ...]:
  """Exception types that mean 'the user gave us something wrong' (one line, exit 2)."""
  import models
  from models import tokenizer
  from rlp import checkpoint, configuration, data, diversity, evaluate, plot
  return (configuration.ConfigError, data.DataError, tokenizer.TokenizerError, models.WeightsError,
          checkpoint.CheckpointError, evaluate.EvalError, plot.PlotError, app.UsageError,
          diversity.DiversityError,
          FileNotFoundError, NotADirectoryError, IsADirectoryError, FileExistsError,
          PermissionError)


def die(prog: str, message: str, code: int = EXIT_BAD_INPUT):
  print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
  sys.exit(code)


def help_text(prog: str, module) -> str:
  """The module's docstring, then its flags with their help and defaults."""
  lines = [(module.__doc__ or prog).strip(), "", "flags:"]
  for flag in sorted(flags.FLAGS.get_flags_for_module(module.__name__), key=lambda f: f.name):
    default = "" if flag.default is None else f" (default: {flag.default!r})"
    lines.append(f"  --{flag.name}: {flag.help}{default}")
  lines += ["  --help: this message", "", __doc__.split("\n\n", 1)[1].strip()]
  return "\n".join(lines)


def _parser(prog: str, load: tuple[str, ...]):
  def parse(argv):
    try:
      rest = flags.FLAGS(argv)
      for name in load:  # a config file that failed to load raises on first use: use it here
        getattr(getattr(flags.FLAGS, name), "lock", None)
      return rest
    except flags.Error as e:
      die(prog, f"{e} (see {prog} --help)")
    except (AttributeError, KeyError, TypeError, ValueError, OSError) as e:
      die(prog, _config_message(e))
  return parse


def _config_message(e: BaseException) -> str:
  """ml_collections reports an unknown field or a bad config file as a nested exception whose text
  carries the useful part (`'grop_size' Did you mean "group_size"`); keep that part."""
  raw = str(e.args[0] if e.args else e)
  missing = re.search(r"No such file or directory: '([^']*)'", raw)
  if missing:
    return f"config file {missing.group(1)} not found (configs/*.py lists the shipped ones)"
  close = re.search(r'Did you mean "([^"]+)" instead of "([^"]+)"', raw)
  if close:
    return (f"unknown config field '{close.group(2)}' (did you mean '{close.group(1)}'?); list "
            "the fields with --print_config")
  text = " ".join(raw.replace("\\n", " ").replace("\\'", "'").split())[:300]
  if isinstance(e, (AttributeError, KeyError)):
    return f"unknown config field {text}; list the fields with --print_config"
  if isinstance(e, OSError):
    return f"cannot load the config file: {text}"
  return f"bad flag value: {text}"


HUGE_PAGES = "glibc.malloc.hugetlb=1"
# glibc's malloc keeps freed memory in the process: one arena, no mmap'ed blocks, no trimming.
# Each setting as an environment variable (read at start-up) and as mallopt's parameter (glibc's
# malloc.h: M_ARENA_MAX, M_MMAP_MAX, M_TRIM_THRESHOLD; mallopt takes an int, and -1 becomes
# SIZE_MAX in glibc: never trim).
_KEEP_MEMORY_SETTINGS = (("MALLOC_ARENA_MAX", "1", -8, 1), ("MALLOC_MMAP_MAX_", "0", -4, 0),
                         ("MALLOC_TRIM_THRESHOLD_", "1000000000000", -1, -1))
KEEP_MEMORY = {var: value for var, value, _, _ in _KEEP_MEMORY_SETTINGS}
_THP = "/sys/kernel/mm/transparent_hugepage/enabled"
# below this much RAM the resident memory is worth more than the speed (peaks: docs/performance.md)
KEEP_MEMORY_MIN_GIB = 20
# the commands whose time goes into steps that free and reallocate the same large buffers, where
# keeping freed memory pays; the others (rlp-eval, rlp-data, ...) allocate buffers of many sizes,
# which a heap that is never trimmed reuses badly: it only grows (docs/performance.md)
KEEP_MEMORY_COMMANDS = ("rlp-train", "rlp-bench")
_ACCELERATOR_DEVICES = ("/dev/nvidia[0-9]*", "/dev/kfd", "/dev/accel*", "/dev/vfio/[0-9]*")


def _cpu_only() -> bool:
  """Whether JAX will run on the CPU: JAX_PLATFORMS says only cpu, or it is unset and the machine
  has no GPU or TPU device file (NVIDIA, ROCm, TPU)."""
  import glob
  platforms = os.environ.get("JAX_PLATFORMS", "")
  if platforms:
    return {p.strip() for p in platforms.split(",") if p.strip()} <= {"cpu"}
  return not any(glob.glob(pattern) for pattern in _ACCELERATOR_DEVICES)


def _memory_gib() -> float:
  try:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
  except (ValueError, OSError):
    return 0.0


def _user_tunes_malloc() -> bool:
  tunables = os.environ.get("GLIBC_TUNABLES", "")
  return (any(k.startswith("MALLOC_") for k in os.environ)
          or any(t != HUGE_PAGES for t in tunables.split(":") if "malloc" in t))


def startup_env(prog: str) -> dict[str, str] | None:
  """The malloc settings this command re-executes itself with (environment variables to add), or
  None. XLA:CPU keeps parameters, optimizer state and activations in malloc'ed memory, and glibc
  reads its settings only at start-up, hence the re-execution, done once, before anything is
  imported or printed. Two settings, each skipped where it does not apply:

  - huge pages (GLIBC_TUNABLES=glibc.malloc.hugetlb=1) when the kernel gives transparent huge
    pages on request (madvise mode, the usual default; `always` gives them anyway, `never`
    none): with 4 KiB pages every pass over the weights misses the TLB page after page. Not over
    a GLIBC_TUNABLES of the user's, nor with RLP_HUGE_PAGES=0.
  - freed memory kept in the process (KEEP_MEMORY) for the commands that train or time training
    steps (KEEP_MEMORY_COMMANDS) when JAX runs on the CPU only (_cpu_only) of a machine with at
    least KEEP_MEMORY_MIN_GIB of RAM: otherwise glibc hands XLA's large
    per-step buffers back to the kernel and every step faults them in again, zeroed by the
    kernel. The cost is resident memory that stays at its high-water mark (release_freed_memory
    hands it back between phases; figures: docs/performance.md). Not when the user sets any
    malloc option (MALLOC_* or a glibc.malloc tunable), nor with RLP_KEEP_MEMORY=0.

  Nothing is done off Linux, or when the command was not started as a script or
  `python -m launch...` (e.g. called from a notebook's kernel or pytest)."""
  if not sys.platform.startswith("linux"):
    return None
  main = sys.modules.get("__main__")
  spec = getattr(main, "__spec__", None)
  script = os.path.basename(getattr(main, "__file__", "") or "")
  if script != prog and not (spec is not None and spec.name.startswith("launch.")):
    return None
  add = {}
  if "GLIBC_TUNABLES" not in os.environ and os.environ.get("RLP_HUGE_PAGES", "1") != "0":
    try:
      with open(_THP) as f:
        if "[madvise]" in f.read():
          add["GLIBC_TUNABLES"] = HUGE_PAGES
    except OSError:
      pass
  if prog in KEEP_MEMORY_COMMANDS and _keep_memory_applies():
    add.update(KEEP_MEMORY)
  return add if add and getattr(sys, "orig_argv", None) else None


def _keep_memory_applies() -> bool:
  return (os.environ.get("RLP_KEEP_MEMORY", "1") != "0" and not _user_tunes_malloc()
          and _cpu_only() and _memory_gib() >= KEEP_MEMORY_MIN_GIB)


def keep_freed_memory() -> bool:
  """KEEP_MEMORY applied from inside a running Python (a notebook's kernel, your own script),
  under the console scripts' rules (startup_env: CPU only, enough RAM, no malloc setting of the
  user's, RLP_KEEP_MEMORY not 0), with glibc's mallopt. Returns whether it was applied.

  Call it before importing jax (or rlp, models, anything that imports it): a thread that has
  already allocated keeps its own malloc arena, and XLA's threads then share that arena, whose
  large blocks are still handed back and faulted in again (figures: docs/performance.md)."""
  if not sys.platform.startswith("linux") or not _keep_memory_applies():
    return False
  import ctypes
  try:
    mallopt = ctypes.CDLL("libc.so.6").mallopt
  except (OSError, AttributeError):  # not glibc (e.g. musl)
    return False
  return all([mallopt(option, value) == 1 for _, _, option, value in _KEEP_MEMORY_SETTINGS])


def release_freed_memory() -> bool:
  """Hands the memory the process has freed back to the kernel now (glibc's malloc_trim), also
  under KEEP_MEMORY, whose settings otherwise keep every freed block for the process's life: a
  command that finishes one large phase before starting another (rlp-bench's peer after our step)
  calls it between them, so the first phase's peak does not become the second's floor."""
  if not sys.platform.startswith("linux"):
    return False
  import ctypes
  try:
    return ctypes.CDLL("libc.so.6").malloc_trim(0) == 1
  except (OSError, AttributeError):
    return False


def _reexec_with_malloc_settings(prog: str):
  add = startup_env(prog)
  if add:
    os.environ.update(add)
    try:
      os.execv(sys.executable, list(sys.orig_argv))
    except OSError:  # e.g. the interpreter moved: go on with glibc's defaults
      for k in add:
        del os.environ[k]


def run(main, module, prog: str, load: tuple[str, ...] = ()):
  """app.run(main) with --help listing `module`'s flags (exit 0), flag / config errors in one line
  (exit 2) and the exit codes above. `load`: config flags to load while parsing flags. On Linux
  the command first re-executes itself once with malloc settings for XLA:CPU (see
  startup_env; RLP_HUGE_PAGES=0 and RLP_KEEP_MEMORY=0 turn them off)."""
  _reexec_with_malloc_settings(prog)
  if any(a in _HELP for a in sys.argv[1:]):
    print(help_text(prog, module))
    sys.exit(0)

  def exit_now(signum, frame):
    # outside rlp-train's training loop (which checkpoints first): stop at once, exit 128+signal.
    # A KeyboardInterrupt could land in a callback that swallows it (JAX's gc hook) and the
    # command would go on as if nothing happened.
    name = signal.Signals(signum).name
    print(f"\n{prog}: interrupted ({name}); checkpoints already written are kept, rerun the "
          "same command to resume", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(128 + signum)

  for sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(sig, exit_now)

  def wrapped(argv):
    try:
      return main(argv)
    except KeyboardInterrupt:
      print(f"\n{prog}: interrupted (Ctrl-C)", file=sys.stderr, flush=True)
      sys.exit(130)
    except Interrupted as e:
      print(f"{prog}: {e}", file=sys.stderr, flush=True)
      sys.exit(128 + e.signum)
    except bad_input_errors() as e:
      die(prog, " ".join(str(e).split()) if "\n" not in str(e) else str(e))
    except _training_errors() as e:
      die(prog, str(e), EXIT_FAILED)

  try:
    app.run(wrapped, flags_parser=_parser(prog, load))
  except KeyboardInterrupt:  # during start-up, before main
    print(f"\n{prog}: interrupted during start-up; nothing was written", file=sys.stderr)
    sys.exit(130)


def _training_errors():
  from rlp import loop
  return (loop.TrainingError,)

