"""A TPU pod example: RLP on a Llama-3-8B HF checkpoint over an fsdp x tensor mesh, bf16, remat.

  launch/tpu_pod.sh my-v5p-64 us-east5-a configs/llama3_8b_rlp_tpu.py /mnt/gcs/runs/l3_8b \\
      --config.model.path=/mnt/ckpt/Meta-Llama-3-8B

On a v5p-64 (32 chips): fsdp 8 x tensor 4; 256 contexts x G 8 thoughts of 1024 tokens per step.

Memory plan (`rlp-bench memory --config=configs/llama3_8b_rlp_tpu.py --model_shape=llama3-8b
--devices=32 --device_memory_gb=95 --platform=tpu`), per chip: state 3.7 GiB, rollout 10.4 GiB
(32 contexts at once), update 18.1 GiB (4 documents per micro-batch: activations 14.3 GiB under
full remat, thought logits 2.9 GiB in chunks of 256 positions, gradients 0.9 GiB), total
21.9 GiB of 95: fits by that estimate (activation terms fitted to XLA's CPU buffers; confirm with
--check on the pod on a reduced config).
"""

from configs import base


def get_config():
  c = base.get_config()
  c.model.init = "hf"
  c.model.path = ""
  c.model.dtype = "bfloat16"
  c.model.remat = "full"
  c.data.seq_len = 2048
  c.data.batch_size = 256
  c.data.min_prefix = 32
  c.rlp.group_size = 8
  c.rlp.max_thought_len = 1024
  c.rlp.minibatches = 1  # one optimizer / EMA update per rollout batch, as the paper
  c.rlp.grad_accum = 8  # the gradient over 8 micro-batches of 32 documents (memory)
  c.train.loss_chunk = 256  # the head over 256 thought positions at a time
  c.optim.lr = 1e-6
  c.train.steps = 2000
  c.train.checkpoint_every = 100
  c.mesh.data = 1
  c.mesh.fsdp = -1
  c.mesh.tensor = 4
  return c
