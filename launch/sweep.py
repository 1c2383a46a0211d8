"""Expand an ablation config into runs; run them locally in sequence or print cluster commands.

  python launch/sweep.py configs/ablations/group_size.py --workdir=workdirs/abl_g
  python launch/sweep.py configs/ablations/group_size.py --dry-run
  python launch/sweep.py configs/ablations/group_size.py --launcher=slurm --dry-run
Extra --config.a.b=value flags after `--` apply to every run.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import subprocess
import sys


def load_sweep(path: str) -> list[dict]:
  spec = importlib.util.spec_from_file_location("sweep_config", path)
  if spec is None or not os.path.exists(path):
    raise SystemExit(f"sweep: no such config file {path}")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  if not hasattr(mod, "get_sweep"):
    raise SystemExit(f"sweep: {path} has no get_sweep(); it is not an ablation config")
  return list(mod.get_sweep())


def run_name(overrides: dict) -> str:
  """The run's directory name: the entry's "name" when it has one (for values such as paths),
  else field=value pairs."""
  if "name" in overrides:
    return str(overrides["name"])
  return "_".join(f"{k.split('.')[-1]}={v}" for k, v in overrides.items())


def commands(config: str, workdir: str, launcher: str, extra: list[str]) -> list[list[str]]:
  out = []
  sweep = load_sweep(config)
  names = [run_name(ov) for ov in sweep]
  for name in names:
    if not name or os.sep in name or names.count(name) > 1:
      raise SystemExit(f"sweep: {config}: run name {name!r} must be unique, non-empty and "
                       "without a path separator (give the entry a 'name')")
  for ov, name in zip(sweep, names):
    wd = os.path.join(workdir, name)
    flags = [f"--config.{k}={v}" for k, v in ov.items() if k != "name"] + extra
    if launcher == "local":
      out.append(["rlp-train", f"--config={config}", f"--workdir={wd}", *flags])
    elif launcher == "slurm":
      out.append(["sbatch", "launch/slurm.sbatch", config, wd, *flags])
    else:
      out.append(["launch/tpu_pod.sh", "$TPU_NAME", "$ZONE", config, wd, *flags])
  return out


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("config")
  p.add_argument("--workdir", default="workdirs/sweep")
  p.add_argument("--launcher", choices=["local", "slurm", "tpu"], default="local")
  p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
  args, extra = p.parse_known_args(argv)
  extra = [e for e in extra if e != "--"]
  cmds = commands(args.config, args.workdir, args.launcher, extra)
  for cmd in cmds:
    print(" ".join(shlex.quote(c) if not c.startswith("$") else c for c in cmd), flush=True)
    if not args.dry_run:
      if args.launcher == "tpu":
        raise SystemExit("sweep: --launcher=tpu only prints commands (use --dry-run)")
      subprocess.run(cmd, check=True)
  return cmds


if __name__ == "__main__":
  main(sys.argv[1:])
