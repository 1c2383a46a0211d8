"""rlp-plot DIR [DIR ...] [--out=PNG]: the main curves of one or several runs in one PNG.

Without --out the PNG goes to DIR/curves.png (one run) or ./runs_comparison.png (several).
"""

import os
import sys

from absl import app, flags

flags.DEFINE_string("out", None, "PNG path")
flags.DEFINE_list("labels", None, "legend labels, one per run")
FLAGS = flags.FLAGS


def main(argv):
  from rlp import plot
  dirs = argv[1:]
  if not dirs:
    raise app.UsageError("usage: rlp-plot WORKDIR [WORKDIR ...] [--out=PNG]")
  out = FLAGS.out or (os.path.join(dirs[0], "curves.png") if len(dirs) == 1
                      else "runs_comparison.png")
  try:
    print(plot.plot_runs(dirs, out, FLAGS.labels))
  except plot.PlotError as e:
    print(f"rlp-plot: error: {e}", file=sys.stderr)
    sys.exit(2)


def run():
  app.run(main)


if __name__ == "__main__":
  run()
