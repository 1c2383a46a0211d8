"""rlp-bench {peak,model,sampler,rlp-step,data,scale,memory,all} [--flags]: figures as JSON.

Each command prints one JSON object as its last line (all: one line per speed benchmark), with
host_rss_peak_gib: the process's peak resident memory up to then.
memory: a run's per-device memory plan from shapes (--config=FILE, bench/memory.py).
"""

import json
import os
import sys

from absl import app, flags
from ml_collections import config_flags

from launch import cli

flags.DEFINE_string("model", "smollm2",
                    "smollm2 (the GGUF) | an HF directory | random-init shapes: tiny, smollm2-shape, "
                    "llama-1b, qwen3-1.7b, llama3-8b")
flags.DEFINE_integer("batch", 2, "model: sequences per step", lower_bound=1)
flags.DEFINE_integer("seq", 256, "model: tokens per sequence", lower_bound=2)
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16", "float16"], "compute dtype")
flags.DEFINE_enum("remat", "none", ["none", "full", "dots"], "remat policy")
flags.DEFINE_enum("attention", None, ["xla", "cudnn"],
                  "attention kernel (default: the model's own, xla)")
flags.DEFINE_integer("loss_chunk", -1,
                     "model: fused LM head + loss chunk (0 = full logits, -1 = auto: fused off CPU)")
flags.DEFINE_bool("peer", False, "also measure the PyTorch / transformers peer side by side")
flags.DEFINE_integer("iters", 3, "timed repetitions (best is reported)", lower_bound=1)
flags.DEFINE_integer("doc_len", 512, "sampler: document length", lower_bound=4)
flags.DEFINE_integer("positions", 4, "sampler: positions per document", lower_bound=1)
flags.DEFINE_integer("group", 4, "sampler / rlp-step: thoughts per position (rlp-step: >= 2)",
                     lower_bound=1)
flags.DEFINE_integer("thought", 64, "sampler / rlp-step: thought length (the decode step is timed "
                     "between thoughts of this length and half of it)", lower_bound=2)
flags.DEFINE_integer("docs", 1, "sampler: documents per batch", lower_bound=1)
flags.DEFINE_integer("contexts", 4, "rlp-step: documents (contexts) per step", lower_bound=1)
flags.DEFINE_integer("context_len", 256, "rlp-step: context length", lower_bound=4)
flags.DEFINE_bool("profile", False, "sampler: also trace the rollout and print where a decode "
                  "step's time goes, per kind of XLA operation (matmul, copies, ...) and the top "
                  "operations with the model code that made them (bench/profile.py); rlp-step: "
                  "the same for the update, the EMA scoring and the CPT step")
flags.DEFINE_enum("decode_layers", "auto", ["auto", "scan", "unroll"],
                  "sampler / rlp-step: the decode loop's layers scanned over stacked weights and "
                  "caches, or unrolled over per-layer ones (auto: unrolled on CPU, scanned "
                  "elsewhere; SamplerConfig.unroll_layers)")
flags.DEFINE_integer("grad_accum", 1, "rlp-step: micro-batches of contexts per update gradient "
                     "(divides --contexts)", lower_bound=1)
config_flags.DEFINE_config_file("config", None, "memory: the run's config file (configs/*.py); "
                                "--config.a.b=value overrides its fields", lock_config=True)
flags.DEFINE_integer("devices", None, "memory: plan for this many devices (default: this "
                     "machine's), e.g. 32 for a 32-GPU cluster", lower_bound=1)
flags.DEFINE_float("device_memory_gb", None, "memory: memory per device in GiB (default: what "
                   "this machine's device reports; host RAM on CPU)")
flags.DEFINE_string("model_shape", None, "memory: a named model shape for configs whose weights "
                    "are not here (qwen3-1.7b | llama3-8b)")
flags.DEFINE_enum("platform", None, ["cpu", "gpu", "tpu"], "memory: the devices the plan is for "
                  "(default: this machine's); decides train.loss_chunk=-1 (auto)")
flags.DEFINE_bool("check", False, "memory: also compile the run's step here (abstract inputs) "
                  "and print XLA's own per-device figure beside the estimate")
FLAGS = flags.FLAGS
COMMANDS = ("peak", "model", "sampler", "rlp-step", "data", "scale", "memory", "all")
UNROLL = {"auto": None, "scan": False, "unroll": True}  # --decode_layers -> unroll_layers
SPEED = ("peak", "model", "sampler", "rlp-step", "data", "scale")


def _run(cmd):
  if cmd == "peak":
    from bench import peak
    return peak.run()
  if cmd == "model":
    from bench import model
    return model.run(FLAGS.model, FLAGS.batch, FLAGS.seq, FLAGS.peer, FLAGS.iters, FLAGS.dtype,
                     FLAGS.remat, FLAGS.attention, FLAGS.loss_chunk)
  if cmd == "sampler":
    from bench import sampler
    return sampler.run(FLAGS.model, FLAGS.docs, FLAGS.doc_len, FLAGS.positions, FLAGS.group,
                       FLAGS.thought, FLAGS.peer, FLAGS.iters, FLAGS.dtype, FLAGS.profile,
                       UNROLL[FLAGS.decode_layers])
  if cmd == "rlp-step":
    from bench import rlp_step
    return rlp_step.run(FLAGS.model, FLAGS.contexts, FLAGS.context_len, FLAGS.group,
                        FLAGS.thought, FLAGS.peer, FLAGS.iters, FLAGS.dtype, FLAGS.remat,
                        FLAGS.attention, FLAGS.grad_accum, UNROLL[FLAGS.decode_layers],
                        FLAGS.profile)
  if cmd == "data":
    from bench import data
    return data.run()
  if cmd == "scale":
    from bench import scale
    return scale.run(FLAGS.model)
  if cmd == "memory":
    from bench import memory
    return memory.run(FLAGS.config, FLAGS.devices, FLAGS.device_memory_gb, FLAGS.model_shape,
                      FLAGS.check, FLAGS.platform)
  raise app.UsageError(cmd)


def main(argv):
  if len(argv) != 2 or argv[1] not in COMMANDS:
    raise app.UsageError(f"usage: rlp-bench {{{'|'.join(COMMANDS)}}} [--flags]")
  os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
  if FLAGS.device_memory_gb is not None and FLAGS.device_memory_gb <= 0:
    raise app.UsageError(f"--device_memory_gb={FLAGS.device_memory_gb} must be > 0 "
                         "(GiB per device)")
  if argv[1] in ("rlp-step", "all") and FLAGS.group < 2:
    raise app.UsageError(f"--group={FLAGS.group}: an RLP step needs G >= 2 thoughts per context "
                         "(the advantage is centred over the group)")
  if argv[1] in ("rlp-step", "all") and FLAGS.contexts % FLAGS.grad_accum:
    raise app.UsageError(f"--grad_accum={FLAGS.grad_accum} must divide --contexts={FLAGS.contexts}")
  if FLAGS.profile:
    if argv[1] not in ("sampler", "rlp-step"):
      raise app.UsageError("--profile goes with the sampler or rlp-step command, e.g. rlp-bench "
                           "rlp-step --profile")
    from bench.profile import TRACEME_FLAG
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {TRACEME_FLAG}".strip()
  cmds = SPEED if argv[1] == "all" else (argv[1],)
  from rlp import metrics
  for cmd in cmds:
    out = _run(cmd)
    out["host_rss_peak_gib"] = round(metrics.host_rss_peak_gib(), 2)  # the process's so far
    print(json.dumps(out), flush=True)


def run():
  cli.run(main, sys.modules[__name__], "rlp-bench")


if __name__ == "__main__":
  run()
