"""rlp-export WORKDIR OUT_DIR [--use_ema] [--overwrite]

Writes a training run's newest checkpoint as a Hugging Face directory: config.json,
model.safetensors and the tokenizer files (tokenizer.json or tokenizer.model, tokenizer_config.json
with BOS / EOS), which transformers loads with AutoModelForCausalLM / AutoTokenizer. --use_ema
exports the EMA params (RLP's no-think baseline) instead of the trained params.
"""

import json
import os
import sys

from absl import flags

from launch import cli

flags.DEFINE_bool("use_ema", False, "export the run's EMA params instead of its params")
flags.DEFINE_bool("overwrite", False, "replace files already in OUT_DIR")
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) != 3:
    cli.die("rlp-export", "usage: rlp-export WORKDIR OUT_DIR [--use_ema] [--overwrite]")
  workdir, out = argv[1], argv[2]
  from absl import logging
  logging.set_verbosity(logging.WARNING)
  import models
  from models.tokenizer import save_hf_tokenizer
  from rlp import evaluate
  if not os.path.isdir(os.path.join(workdir, "checkpoints")):
    cli.die("rlp-export", f"{workdir} is not a run's workdir (no checkpoints/); rlp-export takes "
            "the --workdir of an rlp-train run")
  taken = [n for n in ("model.safetensors", "config.json", "tokenizer.json", "tokenizer.model",
                      "generation_config.json")
           if os.path.exists(os.path.join(out, n))]
  if taken and not FLAGS.overwrite:
    cli.die("rlp-export", f"{out} already holds {', '.join(taken)}; choose another OUT_DIR or "
            "pass --overwrite")
  model, tok, desc = evaluate.load_for_eval(workdir, FLAGS.use_ema)
  models.save_hf(model, out, overwrite=True)
  files = ["config.json", "model.safetensors"] + save_hf_tokenizer(tok, out)
  print(json.dumps({"workdir": workdir, "step": desc["step"], "ema": FLAGS.use_ema,
                    "out": out, "files": files}))


def run():
  cli.run(main, sys.modules[__name__], "rlp-export")


if __name__ == "__main__":
  run()
