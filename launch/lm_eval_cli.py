"""rlp-lm-eval: the lm-evaluation-harness command line (`lm_eval`) with this project's models
registered as --model=rlp, and the offline task files on its --include_path.

  rlp-lm-eval --model=rlp --model_args=path=PATH[,batch_size=8,think=true] --tasks=NAMES ...

PATH is anything rlp-eval loads (a run's workdir, an HF directory, a GGUF file, smollm2); every
other flag is the harness's own (`rlp-lm-eval --help`). `rlp-eval harness` is the same evaluation
with this project's flag handling and errors.
"""

import sys


def run():
  from rlp import harness  # registers the "rlp" model with the harness
  if not any(a.startswith("--include_path") for a in sys.argv[1:]) and "-h" not in sys.argv \
      and "--help" not in sys.argv:
    sys.argv += ["--include_path", harness.local_tasks_dir()]
  from lm_eval.__main__ import cli_evaluate
  cli_evaluate()


if __name__ == "__main__":
  run()
