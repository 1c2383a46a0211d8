"""rlp-train --config=configs/NAME.py [--config.a.b=value ...] --workdir=DIR

Runs, or resumes when DIR holds a checkpoint, the experiment a config file describes. Any config
field can be set with --config.FIELD=VALUE (e.g. --config.rlp.group_size=8); list every field
with its value and comment with

  rlp-train --config=configs/NAME.py --print_config

Multi-host runs (TPU pods, SLURM, explicit --coordinator) call jax.distributed.initialize first.
"""

import sys

from absl import flags
from ml_collections import config_flags

from launch import cli

config_flags.DEFINE_config_file("config", None, "experiment config file (configs/*.py)",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "run directory (checkpoints, metrics, config.json)")
flags.DEFINE_bool("print_config", False, "print every config field with its value and its help "
                  "(the schema's, with the allowed values), then exit")
flags.DEFINE_string("coordinator", None, "host:port of process 0 for multi-process runs")
flags.DEFINE_integer("num_processes", None, "number of processes (with --coordinator)")
flags.DEFINE_integer("process_id", None, "this process's index (with --coordinator)")
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    cli.die("rlp-train", f"unexpected arguments {argv[1:]}; flags are written --name=value")
  if FLAGS.config is None:
    cli.die("rlp-train", "--config=configs/NAME.py is required (see rlp-train --help)")
  if FLAGS.print_config:
    from configs import describe
    print(describe.describe(FLAGS.config))
    return
  if not FLAGS.workdir:
    cli.die("rlp-train", "--workdir=DIR is required (see rlp-train --help)")
  from launch import distributed
  problem = distributed.flags_problem(FLAGS.coordinator, FLAGS.num_processes, FLAGS.process_id)
  if problem:
    cli.die("rlp-train", problem)
  from absl import logging
  logging.set_verbosity(logging.WARNING)  # orbax / grain INFO lines drown the progress bar
  distributed.initialize(FLAGS.coordinator, FLAGS.num_processes, FLAGS.process_id)
  from rlp import loop
  result = loop.train(FLAGS.config, FLAGS.workdir)
  if result.get("interrupted"):
    import signal
    name = signal.Signals(result["interrupted"]).name
    raise cli.Interrupted(result["interrupted"], f"interrupted ({name}) at step "
                          f"{result.get('step')}; its checkpoint is written, rerun the same "
                          "command to resume")


def run():
  cli.run(main, sys.modules[__name__], "rlp-train", load=("config",))


if __name__ == "__main__":
  run()
