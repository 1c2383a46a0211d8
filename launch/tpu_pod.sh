#!/bin/bash
# TPU pod launch on every worker of a TPU VM slice; jax.distributed auto-detects the pod.
#   launch/tpu_pod.sh [--dry-run] TPU_NAME ZONE CONFIG WORKDIR [--config.a.b=value ...]
# WORKDIR must be a path every worker shares, e.g. a gcsfuse mount of a bucket
# (gcsfuse BUCKET /mnt/gcs): metrics.jsonl and config.json use plain file I/O.
# Each worker installs the TPU build of JAX (make venv-tpu), not the CPU test stack.
set -euo pipefail
DRY=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY=1; shift; fi
NAME=${1:?usage: tpu_pod.sh [--dry-run] TPU_NAME ZONE CONFIG GS_WORKDIR [flags]}
ZONE=${2:?zone}
CONFIG=${3:?config}
WORKDIR=${4:?workdir (shared path, e.g. /mnt/gcs/runs/NAME)}
shift 4
REPO=${RLP_REPO_DIR:-\$HOME/rlp}
REMOTE="cd $REPO && git pull --ff-only && make venv-tpu && JAX_COMPILATION_CACHE_DIR=$WORKDIR/jax_cache TPU_STDERR_LOG_LEVEL=2 .venv/bin/rlp-train --config=$CONFIG --workdir=$WORKDIR $*"
CMD=(gcloud compute tpus tpu-vm ssh "$NAME" --zone="$ZONE" --worker=all --command="$REMOTE")
if [[ $DRY == 1 ]]; then printf '%q ' "${CMD[@]}"; echo; exit 0; fi
exec "${CMD[@]}"
