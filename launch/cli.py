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
_THP = "/sys/kernel/mm/transparent_hugepage/enabled"


def huge_pages_reexec_argv(prog: str) -> list[str] | None:
  """The command line to re-execute this command with, so that glibc's malloc asks Linux for
  transparent huge pages for its large blocks (GLIBC_TUNABLES=glibc.malloc.hugetlb=1), or None.

  XLA:CPU keeps parameters, optimizer state and activations in malloc'ed memory; with 4 KiB
  pages, streaming the weights through a decode step or an update misses the TLB on every page.
  On a 2-core machine in madvise mode (the usual default) the SmolLM2 RLP step ran 22% faster
  and the CPT step 18% (rlp-bench rlp-step, A/B twice) at the same peak memory. glibc reads the
  setting only at start-up, hence the re-execution, done once, before anything is imported or
  printed. Skipped: off Linux, when GLIBC_TUNABLES is set (a user's own setting, or the
  re-executed process), when the kernel's mode is not madvise (`always` gives huge pages
  anyway, `never` none), when RLP_HUGE_PAGES=0, and when the command was not started as a
  script or `python -m launch...` (e.g. called from a notebook's kernel)."""
  if not sys.platform.startswith("linux") or "GLIBC_TUNABLES" in os.environ:
    return None
  if os.environ.get("RLP_HUGE_PAGES", "1") == "0":
    return None
  main = sys.modules.get("__main__")
  spec = getattr(main, "__spec__", None)
  script = os.path.basename(getattr(main, "__file__", "") or "")
  if script != prog and not (spec is not None and spec.name.startswith("launch.")):
    return None
  try:
    with open(_THP) as f:
      if "[madvise]" not in f.read():
        return None
  except OSError:
    return None
  return list(getattr(sys, "orig_argv", [])) or None


def _reexec_with_huge_pages(prog: str):
  argv = huge_pages_reexec_argv(prog)
  if argv:
    os.environ["GLIBC_TUNABLES"] = HUGE_PAGES
    try:
      os.execv(sys.executable, argv)
    except OSError:  # e.g. the interpreter moved: go on with 4 KiB pages
      pass


def run(main, module, prog: str, load: tuple[str, ...] = ()):
  """app.run(main) with --help listing `module`'s flags (exit 0), flag / config errors in one line
  (exit 2) and the exit codes above. `load`: config flags to load while parsing flags. On Linux
  the command first re-executes itself once with huge pages for malloc (see
  huge_pages_reexec_argv; RLP_HUGE_PAGES=0 turns this off)."""
  _reexec_with_huge_pages(prog)
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

