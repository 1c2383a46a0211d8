"""The paper's setting: RLP on Qwen3-1.7B-Base (its Table of settings; docs/method.md).

  rlp-train --config=configs/qwen3_1p7b_rlp.py \\
      --config.model.path=/ckpt/Qwen3-1.7B-Base --workdir=/runs/qwen3_rlp
  sbatch launch/slurm.sbatch configs/qwen3_1p7b_rlp.py /runs/qwen3_rlp   # a GPU cluster

G 16 thoughts of up to 2048 tokens at ONE random position of each of 512 documents (context 2048)
per step, lr 1e-6 constant AdamW, EMA tau 0.999, KL beta 0, one update per rollout batch.
Expected (paper, 32 H100, 1B tokens): Overall 30.32 -> 36.03, 12.47 s/step vs 5.54 for CPT.
Needs an HF directory (config.json + safetensors); no weights are downloaded.

What this data can reach: the shipped corpus is reasoning-gym's gsm_symbolic (about 200k
GSM8K-style problems with worked solutions), not the paper's pretraining mix, so the paper's
table (math, MMLU, MMLU-Pro, GPQA) is not expected from it; use your own corpus with
--config.data.source=arrayrecord:DIR (rlp-data build). The table for the base model, the CPT twin
(configs/qwen3_1p7b_cpt.py) and this run, on a machine with the harness's datasets:
  rlp-eval table /ckpt/Qwen3-1.7B-Base /runs/qwen3_cpt /runs/qwen3_rlp --tasks=paper \
      --output_path=/runs/table
(--tasks=paper: gsm8k, minerva_math500, minerva_math, aime25, mmlu, mmlu_pro, gpqa_diamond_n_shot,
greedy; the default on an accelerator. --tasks=offline: the local rlp_* tasks of rlp/harness.py.)

Memory plan (`rlp-bench memory --config=configs/qwen3_1p7b_rlp.py --model_shape=qwen3-1.7b
--devices=32 --device_memory_gb=80 --platform=gpu`), per device of 32 x 80 GB: state 0.8 GiB
(FSDP over 32), rollout 15.0 GiB (4 contexts per chunk: rlp.rollout_batch = 128; all 16 at once
would hold 56 GiB of thought KV), update 37.7 GiB (one document per micro-batch: 30.5 GiB of
activations under full remat, 7.0 GiB of thought logits in chunks of 256 positions, the
gradients), total 38.5 GiB: fits by that estimate. Without the head in chunks the thought logits
of one document alone are ~90 GiB. The activation terms are fitted to XLA's CPU buffers
(bench/memory.py): confirm on the GPU with --check on a reduced config.
"""

from configs import base


def get_config():
  c = base.get_config()
  c.model.init = "hf"
  c.model.path = ""  # set with --config.model.path=/path/to/Qwen3-1.7B-Base
  c.model.dtype = "bfloat16"
  c.model.remat = "full"
  c.model.attention = "cudnn"
  c.data.source = "reasoning:train"
  c.data.num_docs = 200000
  c.data.seq_len = 2048
  c.data.batch_size = 512
  c.data.positions_per_doc = 1
  c.data.min_prefix = 32
  c.rlp.group_size = 16
  c.rlp.max_thought_len = 2048
  c.rlp.temperature = 0.7
  c.rlp.eps_low = 0.2
  c.rlp.eps_high = 0.2
  c.rlp.kl_beta = 0.0
  c.rlp.ema_tau = 0.999
  c.rlp.num_updates = 1
  c.rlp.minibatches = 1  # the paper: ONE optimizer update (and EMA update) per rollout batch
  c.rlp.grad_accum = 16  # its gradient summed over 16 micro-batches of 32 documents (memory)
  c.rlp.rollout_batch = 128  # 4 contexts per device sampled at a time (rollout KV 14 GiB)
  c.train.loss_chunk = 256  # the head over 256 thought positions at a time (logits 7 GiB)
  c.optim.lr = 1e-6
  c.optim.schedule = "constant"
  c.train.steps = 1000
  c.train.checkpoint_every = 50
  c.train.eval_every = 100
  c.train.sample_every = 50
  c.mesh.data = 1
  c.mesh.fsdp = -1
  c.mesh.tensor = 1
  return c
