"""rlp-plot DIR [DIR ...] [--out=PNG]: the main curves of one or several runs in one PNG.
rlp-plot REPORT.json [REPORT.json ...]: pass@k curves of rlp-eval reports (checkpoint comparison).

Without --out the PNG goes to DIR/curves.png (one run), ./runs_comparison.png (several runs) or
./pass_at_k.png (reports).
"""

import os
import sys

from absl import app, flags

from launch import cli

flags.DEFINE_string("out", None, "PNG path")
flags.DEFINE_list("labels", None, "legend labels, one per run")
FLAGS = flags.FLAGS


def main(argv):
  from rlp import plot
  dirs = argv[1:]
  if not dirs:
    raise app.UsageError("usage: rlp-plot WORKDIR [WORKDIR ...] [--out=PNG]")
  reports = all(d.endswith(".json") for d in dirs)
  if reports:
    out = FLAGS.out or "pass_at_k.png"
  else:
    out = FLAGS.out or (os.path.join(dirs[0], "curves.png") if len(dirs) == 1
                        else "runs_comparison.png")
  if reports:
    print(plot.plot_pass_at_k(dirs, out, FLAGS.labels))
  else:
    print(plot.plot_runs(dirs, out, FLAGS.labels))


def run():
  cli.run(main, sys.modules[__name__], "rlp-plot")


if __name__ == "__main__":
  run()
