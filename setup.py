from setuptools import find_packages, setup

CORE = [
    "jax>=0.10",
    "flax>=0.12",
    "optax>=0.2.5",
    "orbax-checkpoint>=0.11",
    "grain>=0.2.10",
    "array-record>=0.8",
    "ml-collections>=1.0",
    "absl-py>=2.0",
    "numpy>=1.26",
    "safetensors>=0.5",  # HF weight import/export without torch
    "gguf>=0.17",  # GGUF quant types and dequantization in numpy (models/gguf.py parses the header)
    "tokenizers>=0.21",  # fast BPE tokenizer built from GGUF / tokenizer.json
    "sentencepiece>=0.2",
    "tqdm>=4.66",  # progress bars (data build, training loop)
    "tensorboardX>=2.6",  # TensorBoard event files without TensorFlow
    "matplotlib>=3.8",  # rlp-plot
]
EXTRAS = {
    "tfds": ["tensorflow-datasets>=4.9"],
    # Accelerators: JAX's CUDA 12 wheels (NVIDIA GPUs) or TPU runtime (TPU VMs; pip needs
    # -f https://storage.googleapis.com/jax-releases/libtpu_releases.html). See README.
    "cuda12": ["jax[cuda12]>=0.10"],
    "tpu": ["jax[tpu]>=0.10"],
    "tensorboard": ["tensorboard>=2.15"],  # the viewer for WORKDIR/tb (the writer is core)
    "corpora": ["reasoning-gym>=0.1.20"],
    # rlp-eval harness / table and rlp-lm-eval: lm-evaluation-harness tasks on our models
    # math-verify: final answers compared as mathematics (rlp/answers.py; numbers otherwise)
    "eval": ["lm-eval>=0.4.13", "math-verify>=0.7"],
    # train.wandb_project / rlp-eval --wandb_project: metrics to Weights & Biases (off by default)
    "wandb": ["wandb>=0.19"],
    "dev": [
        "pytest>=8",
        "pytest-xdist>=3.5",
        "tensorflow-datasets>=4.9",
        "reasoning-gym>=0.1.20",
        "torch==2.13.0",  # CPU wheel on local disk; parity reference only
        "transformers>=4.50",
        "accelerate>=1.0",
        "nbclient>=0.10",
        "nbformat>=5.10",
        "ipykernel>=6.29",
        "lm-eval>=0.4.13",
        "math-verify>=0.7",
        "wandb>=0.19",  # the W&B logging test runs in its offline mode
    ],
}

setup(
    name="rlp",
    version="0.1.0",
    description="RLP: reinforcement learning as a pretraining objective, in JAX/Flax",
    python_requires=">=3.10",
    packages=find_packages(include=["rlp", "rlp.*", "models", "models.*", "launch", "launch.*", "configs", "configs.*", "bench", "bench.*"]),
    install_requires=CORE,
    extras_require=EXTRAS,
    entry_points={
        "console_scripts": [
            "rlp-train=launch.train:run",
            "rlp-eval=launch.evaluate:run",
            "rlp-data=launch.data:run",
            "rlp-bench=launch.bench:run",
            "rlp-plot=launch.plot:run",
            "rlp-export=launch.export:run",
            "rlp-lm-eval=launch.lm_eval_cli:run",
        ]
    },
)
