"""What a user meets first at the command line: --help, one-line errors with a fix, exit codes,
and a workdir that is never thrown away by a changed config."""

import glob
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPTS = {"train": "rlp-train", "evaluate": "rlp-eval", "data": "rlp-data", "bench": "rlp-bench",
           "plot": "rlp-plot", "export": "rlp-export"}


def _cli(module, *args, timeout=300):
  return subprocess.run([sys.executable, "-m", f"launch.{module}", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=timeout)


def _one_line_error(r, code=2):
  assert r.returncode == code, (r.returncode, r.stderr[-2000:])
  errors = [l for l in r.stderr.splitlines() if " error: " in l]
  assert len(errors) == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
  return errors[0]


@pytest.mark.parametrize("module", sorted(SCRIPTS))
def test_help_lists_the_flags_and_exits_0(module):
  r = _cli(module, "--help")
  assert r.returncode == 0, r.stderr
  assert "flags:" in r.stdout and "Exit codes" in r.stdout
  assert r.stdout.count("\n  --") >= 2  # the script's own flags with their help
  assert SCRIPTS[module] in r.stdout


def test_print_config_lists_every_field_with_value_and_comment():
  r = _cli("train", "--config=configs/tiny.py", "--print_config", "--config.rlp.group_size=8")
  assert r.returncode == 0, r.stderr
  lines = r.stdout.splitlines()
  assert "rlp.group_size = 8  # G thoughts per context (the paper: 16) [>= 2 (advantages need " \
      "a group)]" in lines
  assert any(l.startswith("train.steps = 10  # ") for l in lines)
  from configs import tiny
  from configs.describe import _leaves
  assert len(lines) == len(list(_leaves(tiny.get_config())))


@pytest.mark.parametrize("args,needle", [
    (("--config=configs/tiny.py", "--config.rlp.grop_size=4", "--workdir=/tmp/x"),
     "unknown config field 'grop_size' (did you mean 'group_size'?)"),
    (("--config=configs/nope.py", "--workdir=/tmp/x"), "config file configs/nope.py not found"),
    (("--config=configs/tiny.py", "--config.rlp.group_size=abc", "--workdir=/tmp/x"),
     "--config.rlp.group_size=abc"),
    (("--config=configs/tiny.py",), "--workdir=DIR is required"),
    (("--config=configs/tiny.py", "--workdir=/tmp/x", "--nosuch=1"), "Unknown command line flag"),
    (("--config=configs/tiny.py", "--workdir=/tmp/x", "--num_processes=2"),
     "--num_processes and --process_id go with --coordinator=HOST:PORT"),
    (("--config=configs/tiny.py", "--workdir=/tmp/x", "--coordinator=h:1", "--num_processes=2",
      "--process_id=2"), "need N >= 1 and 0 <= I < N"),
])
def test_train_flag_errors_are_one_line(args, needle):
  assert needle in _one_line_error(_cli("train", *args))


def test_workdir_that_is_a_file(tmp_path):
  f = tmp_path / "f"
  f.write_text("keep me")
  line = _one_line_error(_cli("train", "--config=configs/tiny.py", f"--workdir={f}"))
  assert "is a file" in line and f.read_text() == "keep me"


def test_eval_bad_models_are_one_line(tmp_path):
  f = tmp_path / "w.gguf"
  f.write_bytes(b"not a gguf at all")
  assert "is not a GGUF file" in _one_line_error(_cli("evaluate", f"--model={f}"))
  d = tmp_path / "hf"
  d.mkdir()
  (d / "model.safetensors").write_bytes(b"")
  assert "not a GGUF file, an HF directory" in _one_line_error(_cli("evaluate", f"--model={d}"))


@pytest.mark.parametrize("args,needle", [
    (("--samples=2",), "--k=1,2,4: pass@k needs integers 1 <= k <= --samples (2)"),
    (("--likelihood_docs=0",), "--likelihood_docs=0: 0 is not a positive integer"),
    (("--thought_temperature=-1",), "--thought_temperature=-1.0 is invalid: must be >= 0"),
    (("--seq_len=4",), "--seq_len=4 is invalid: must be >= min_prefix + 2 (10)"),
])
def test_eval_flag_errors_are_one_line(tmp_path, args, needle):
  out = tmp_path / "r.json"
  assert needle in _one_line_error(_cli("evaluate", "--model=smollm2", f"--out={out}", *args))
  assert not out.exists()


def test_data_flag_errors_are_one_line(tmp_path):
  assert "--proj_dim=0: 0 is not a positive integer" in _one_line_error(
      _cli("data", "diversity", "--tokenizer=bytes", "--proj_dim=0"))
  line = _one_line_error(_cli("data", "train-tokenizer", "--vocab_size=5",
                              f"--output={tmp_path / 'sp'}"))
  assert "could not train --vocab_size=5" in line and "change --vocab_size" in line
  assert not list(tmp_path.iterdir())


def test_empty_text_builds_no_dataset(tmp_path):
  empty = tmp_path / "empty.txt"
  empty.write_text("\n\n")
  out = tmp_path / "ds"
  line = _one_line_error(_cli("data", "build", f"--source=text:{empty}", "--tokenizer=bytes",
                              f"--output={out}"))
  assert "no document" in line and not out.exists()


def test_changed_model_is_refused_and_nothing_is_renamed(tmp_path):
  wd = tmp_path / "run"
  base = ("--config=configs/tiny.py", "--config.train.steps=2", "--config.train.checkpoint_every=2",
          "--config.train.eval_docs=0", "--config.train.plot=false",
          "--config.train.progress=false", f"--workdir={wd}")
  r = _cli("train", *base)
  assert r.returncode == 0, r.stderr[-2000:]
  before = sorted(os.listdir(wd / "checkpoints")), (wd / "metrics.jsonl").read_text()
  line = _one_line_error(_cli("train", *base, "--config.model.d_model=32"))
  assert "model.d_model: 64 -> 32" in line and "--config.model.d_model=64" in line
  assert "another --workdir" in line and "model.init=checkpoint" in line
  assert (sorted(os.listdir(wd / "checkpoints")), (wd / "metrics.jsonl").read_text()) == before
  assert not any(".damaged" in n for n in os.listdir(wd / "checkpoints"))
  # the unchanged command still resumes the run (here: already complete)
  r = _cli("train", *base)
  assert r.returncode == 0 and "already complete" in r.stderr


def test_resume_with_a_warmup_added_is_refused_in_one_line(tmp_path):
  """A rerun that adds a format warm-up keeps the arrays' shapes but not the run's structure:
  one line naming the fields and the two ways forward, exit 2, nothing in the workdir changed."""
  wd = tmp_path / "run"
  base = ("--config=configs/tiny.py", "--config.train.eval_docs=0", "--config.train.plot=false",
          "--config.train.progress=false", f"--workdir={wd}")
  r = _cli("train", *base, "--config.train.steps=4")
  assert r.returncode == 0, r.stderr[-2000:]
  before = {n: (wd / n).read_bytes() for n in os.listdir(wd) if (wd / n).is_file()}
  line = _one_line_error(_cli("train", *base, "--config.train.steps=6",
                              "--config.warmup.steps=2",
                              "--config.warmup.source=thoughts:reasoning:train"))
  assert "warmup.steps: 0 -> 2" in line and "warmup.source" in line, line
  assert "--config.warmup.steps=0" in line and "another --workdir" in line
  assert {n: (wd / n).read_bytes() for n in os.listdir(wd) if (wd / n).is_file()} == before


@pytest.mark.parametrize("delay", [1.5, 6.0, 12.0])
def test_ctrl_c_exits_130_without_a_traceback(tmp_path, delay):
  """Ctrl-C during start-up (imports, model build) or early training: exit 130, one line that
  says it was interrupted, whichever phase the signal lands in."""
  import signal
  import time
  p = subprocess.Popen([sys.executable, "-m", "launch.train", "--config=configs/tiny.py",
                        "--config.train.progress=false", f"--workdir={tmp_path / 'run'}"],
                       cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  time.sleep(delay)
  p.send_signal(signal.SIGINT)
  _, err = p.communicate(timeout=300)
  assert p.returncode == 130, err[-2000:]
  assert "Traceback" not in err and "interrupted" in err.lower(), err[-2000:]


def _thp_mode():
  try:
    with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
      return f.read()
  except OSError:
    return ""


def test_commands_reexecute_once_with_malloc_settings():
  """Every command re-executes itself once with huge pages where the kernel gives transparent huge
  pages on request (madvise mode) and, on a CPU-only run, rlp-train and rlp-bench with malloc
  keeping freed memory; never over a user's malloc setting. rlp-bench prints what it ran with."""
  import json
  from launch import cli
  env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "RLP_HUGE_PAGES",
                                                          "RLP_KEEP_MEMORY")
         and not k.startswith("MALLOC_")}
  env["JAX_PLATFORMS"] = "cpu"
  huge = {"GLIBC_TUNABLES": cli.HUGE_PAGES} if "[madvise]" in _thp_mode() else {}
  keep = cli.KEEP_MEMORY if cli._memory_gib() >= cli.KEEP_MEMORY_MIN_GIB else {}
  for extra, expect in (({}, {**huge, **keep} or None),
                        ({"RLP_HUGE_PAGES": "0", "RLP_KEEP_MEMORY": "0"}, None),
                        ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"},
                         {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}),
                        ({"MALLOC_ARENA_MAX": "4"}, {**huge, "MALLOC_ARENA_MAX": "4"})):
    r = subprocess.run([sys.executable, "-m", "launch.bench", "peak"], cwd=ROOT, text=True,
                       capture_output=True, timeout=300, env={**env, **extra})
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.splitlines()[-1]).get("malloc_env") == expect, extra


def test_malloc_settings_rules(monkeypatch, tmp_path):
  """The re-execution's rules: only for a command started as a script or `python -m launch...`
  (never a notebook's kernel or pytest); huge pages only in madvise mode; freed memory kept only
  on a CPU-only run; never over a user's setting; each can be turned off."""
  import types
  from launch import cli
  assert cli.startup_env("rlp-train") is None  # pytest is __main__ here
  for k in [k for k in os.environ if k.startswith("MALLOC_")] + [
      "GLIBC_TUNABLES", "RLP_HUGE_PAGES", "RLP_KEEP_MEMORY"]:
    monkeypatch.delenv(k, raising=False)
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.setattr(sys, "platform", "linux")
  monkeypatch.setattr(sys, "orig_argv", ["python", "/venv/bin/rlp-train", "--workdir=w"])
  monkeypatch.setitem(sys.modules, "__main__",
                      types.SimpleNamespace(__file__="/venv/bin/rlp-train", __spec__=None))
  mode = tmp_path / "enabled"
  monkeypatch.setattr(cli, "_THP", str(mode))
  memory_gib = [23.4]  # this machine's RAM, as the re-execution reads it
  monkeypatch.setattr(cli, "_memory_gib", lambda: memory_gib[0])
  huge, keep = {"GLIBC_TUNABLES": cli.HUGE_PAGES}, cli.KEEP_MEMORY
  for text, want in (("always [madvise] never", {**huge, **keep}),
                     ("[always] madvise never", keep), ("always madvise [never]", keep)):
    mode.write_text(text)
    assert cli.startup_env("rlp-train") == want, text
  mode.write_text("always [madvise] never")
  assert cli.startup_env("rlp-eval") is None  # another program's script
  # only the commands that run training steps keep freed memory; rlp-eval / rlp-data get huge
  # pages alone (their buffers of many sizes made the kept heap grow: 9.1 instead of 3.1 GiB)
  for prog, want in (("rlp-eval", huge), ("rlp-data", huge), ("rlp-bench", {**huge, **keep})):
    monkeypatch.setattr(sys, "orig_argv", ["python", f"/venv/bin/{prog}"])
    monkeypatch.setitem(sys.modules, "__main__",
                        types.SimpleNamespace(__file__=f"/venv/bin/{prog}", __spec__=None))
    assert cli.startup_env(prog) == want, prog
  monkeypatch.setattr(sys, "orig_argv", ["python", "/venv/bin/rlp-train", "--workdir=w"])
  monkeypatch.setitem(sys.modules, "__main__",
                      types.SimpleNamespace(__file__="/venv/bin/rlp-train", __spec__=None))
  for var, want in (("RLP_HUGE_PAGES", keep), ("RLP_KEEP_MEMORY", huge)):
    monkeypatch.setenv(var, "0")
    assert cli.startup_env("rlp-train") == want, var
    monkeypatch.delenv(var)
  # a user's malloc settings are kept as they are: no huge pages over a GLIBC_TUNABLES, no
  # KEEP_MEMORY over any malloc option (the re-executed process itself finds nothing to add)
  for env, want in (({"GLIBC_TUNABLES": ""}, keep), ({"GLIBC_TUNABLES": cli.HUGE_PAGES}, keep),
                    ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, None),
                    ({"MALLOC_ARENA_MAX": "4"}, huge), ({**huge, **keep}, None)):
    for k, v in env.items():
      monkeypatch.setenv(k, v)
    assert cli.startup_env("rlp-train") == want, env
    for k in env:
      monkeypatch.delenv(k)
  memory_gib[0] = 15.3  # a small machine keeps its memory free
  assert cli.startup_env("rlp-train") == huge
  memory_gib[0] = 23.4
  # accelerators: JAX_PLATFORMS decides; unset, a GPU or TPU device file does
  for platforms, want in (("cuda", huge), ("cpu,cuda", huge), ("tpu", huge), ("cpu", {**huge, **keep})):
    monkeypatch.setenv("JAX_PLATFORMS", platforms)
    assert cli.startup_env("rlp-train") == want, platforms
  monkeypatch.delenv("JAX_PLATFORMS")
  monkeypatch.setattr(cli, "_ACCELERATOR_DEVICES", (str(tmp_path / "nvidia[0-9]*"),))
  assert cli.startup_env("rlp-train") == {**huge, **keep}
  (tmp_path / "nvidia0").write_text("")
  assert cli.startup_env("rlp-train") == huge
  monkeypatch.setitem(sys.modules, "__main__", types.SimpleNamespace(
      __file__="/src/launch/train.py", __spec__=types.SimpleNamespace(name="launch.train")))
  assert cli.startup_env("rlp-train") == huge  # python -m launch.train
  monkeypatch.setattr(sys, "platform", "darwin")
  assert cli.startup_env("rlp-train") is None


_FREE_256MB = """
import ctypes, json, sys
from launch import cli
applied = cli.keep_freed_memory()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
def rss():
  return int(open("/proc/self/statm").read().split()[1]) * 4096
n = 256 << 20
p = libc.malloc(n)
ctypes.memset(p, 1, n)
before = rss()
libc.free(p)
print(json.dumps({"applied": applied, "returned_mb": (before - rss()) >> 20}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_keep_freed_memory_inside_a_running_python():
  """keep_freed_memory() (for notebooks and scripts, which the console scripts' re-execution does
  not reach): after it, a freed 256 MB block stays in the process; with RLP_KEEP_MEMORY=0 or on a
  GPU run it does nothing and glibc hands the block back to the kernel."""
  import json
  from launch import cli
  if cli._memory_gib() < cli.KEEP_MEMORY_MIN_GIB:
    pytest.skip(f"the setting applies only with >= {cli.KEEP_MEMORY_MIN_GIB} GiB of RAM")
  env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "RLP_KEEP_MEMORY")
         and not k.startswith("MALLOC_")}

  def run(**extra):
    r = subprocess.run([sys.executable, "-c", _FREE_256MB], cwd=ROOT, text=True,
                       capture_output=True, timeout=120, env={**env, **extra})
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.splitlines()[-1])

  kept = run(JAX_PLATFORMS="cpu")
  assert kept["applied"] and kept["returned_mb"] < 16, kept
  for extra in ({"JAX_PLATFORMS": "cpu", "RLP_KEEP_MEMORY": "0"}, {"JAX_PLATFORMS": "cuda"},
                {"JAX_PLATFORMS": "cpu", "MALLOC_ARENA_MAX": "2"}):
    got = run(**extra)
    assert not got["applied"] and got["returned_mb"] > 200, (extra, got)


def test_release_freed_memory_hands_a_kept_peak_back():
  """Under the keep-memory malloc settings a freed 400 MB block stays resident until
  release_freed_memory(), which hands it back (what lets rlp-bench time the peer after our step
  on a 24 GB machine)."""
  code = """
import os, numpy as np
from launch.cli import release_freed_memory
def rss():
  return int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20
x = np.ones(100 * 2**20, np.float32); before = rss(); del x
kept = rss(); ok = release_freed_memory(); print(before, kept, rss(), ok)
"""
  env = dict(os.environ, MALLOC_ARENA_MAX="1", MALLOC_MMAP_MAX_="0",
             MALLOC_TRIM_THRESHOLD_="1000000000000", RLP_KEEP_MEMORY="1")
  r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                     text=True, timeout=120)
  assert r.returncode == 0, r.stderr
  before, kept, after, ok = r.stdout.split()
  assert ok == "True" and float(kept) > float(before) - 50  # freed but still resident
  assert float(after) < float(kept) - 300, r.stdout


def _modules_imported_by_the_tests():
  """`launch.*` / `bench.*` modules some test imports into its own process (code in a string that
  a subprocess runs is not an import and is not counted)."""
  import ast
  found = set()
  for root, _, names in os.walk(os.path.join(ROOT, "tests")):
    for name in names:
      if not name.endswith(".py"):
        continue
      for node in ast.walk(ast.parse(open(os.path.join(root, name)).read())):
        if isinstance(node, ast.ImportFrom) and node.module:
          top = node.module.split(".")[0]
          if top in ("launch", "bench"):
            found |= ({f"{node.module}.{a.name}" for a in node.names} if node.module == top
                      else {node.module})
        elif isinstance(node, ast.Import):
          found |= {a.name for a in node.names if a.name.split(".")[0] in ("launch", "bench")}
  return found


def test_modules_tests_import_in_process_define_no_flag_twice():
  """pytest-xdist runs several test files in one process, in an order that changes from run to
  run: two imported CLI modules that define the same absl flag (every CLI has its own --group,
  --model, ...) fail there with DuplicateFlagError, in one run and not the next. Tests therefore
  import library code (rlp/, flag-free helpers) and run CLIs in a subprocess; this keeps it so."""
  import re
  defined = {}
  for module in sorted(_modules_imported_by_the_tests()):
    path = os.path.join(ROOT, *module.split(".")) + ".py"
    assert os.path.exists(path), f"{module}: a test imports it, but {path} does not exist"
    for name in re.findall(r"DEFINE_\w+\(\s*\"(\w+)\"", open(path).read()):
      defined.setdefault(name, []).append(module)
  twice = {k: v for k, v in defined.items() if len(v) > 1}
  assert not twice, f"flags defined by more than one module the tests import in-process: {twice}"
  assert "bench.long_thoughts" in _modules_imported_by_the_tests()  # the scan sees imports


def test_package_import_rules():
  """docs/architecture.md's rules between the packages: `models` imports nothing of `rlp`,
  `launch`, `configs` or `bench`; `rlp` nothing of `configs`, `launch` or `bench` (at the top of a
  module or inside a function)."""
  import ast
  banned = {"models": {"rlp", "launch", "configs", "bench"}, "rlp": {"configs", "launch", "bench"}}
  broken = []
  for package, tops in banned.items():
    for path in sorted(glob.glob(os.path.join(ROOT, package, "*.py"))):
      for node in ast.walk(ast.parse(open(path).read())):
        names = ([node.module] if isinstance(node, ast.ImportFrom) and node.module and
                 not node.level else [a.name for a in node.names]
                 if isinstance(node, ast.Import) else [])
        broken += [f"{os.path.relpath(path, ROOT)} imports {n}" for n in names
                   if n.split(".")[0] in tops]
  assert not broken, broken
