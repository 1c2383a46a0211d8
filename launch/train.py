"""rlp-train --config=configs/NAME.py [--config.a.b=value ...] --workdir=DIR

Runs, or resumes when DIR holds a checkpoint, the experiment a config file describes.
Multi-host runs (TPU pods, SLURM, explicit --coordinator) call jax.distributed.initialize first.
"""

import os
import sys

from absl import app, flags
from ml_collections import config_flags

config_flags.DEFINE_config_file("config", None, "experiment config file", lock_config=True)
flags.DEFINE_string("workdir", None, "run directory (checkpoints, metrics, config.json)")
flags.DEFINE_string("coordinator", None, "host:port of process 0 for multi-process runs")
flags.DEFINE_integer("num_processes", None, "number of processes (with --coordinator)")
flags.DEFINE_integer("process_id", None, "this process's index (with --coordinator)")
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def main(argv):
  del argv
  from absl import logging
  logging.set_verbosity(logging.WARNING)  # orbax / grain INFO lines drown the progress bar
  from launch import distributed
  distributed.initialize(FLAGS.coordinator, FLAGS.num_processes, FLAGS.process_id)
  from rlp import configuration, data, loop
  import models
  try:
    loop.train(FLAGS.config, FLAGS.workdir)
  except (configuration.ConfigError, data.DataError, data.TokenizerError,
          models.WeightsError, loop.TrainingError) as e:
    print(f"rlp-train: error: {e}", file=sys.stderr)
    sys.exit(2)


def run():
  app.run(main)


if __name__ == "__main__":
  run()
