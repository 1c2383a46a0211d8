#!/usr/bin/env bash
# The accelerator benchmark figures in one go: peak, the model train step (Llama-3.2-1B shape,
# bf16; remat and attention variants; the transformers peer), the RLP step and the sampler.
# Usage: bash bench/gpu_suite.sh [OUTDIR] [part ...]   parts: peak model peer rlp sampler (default all)
# Each benchmark runs in its own process under a time limit, so one failure does not stop the rest;
# its JSON line goes to OUTDIR/results.jsonl and its log to OUTDIR/<name>.log.
set -u
OUT_DIR=${1:-bench_out}; shift || true
PARTS=${*:-peak model peer rlp sampler}
mkdir -p "$OUT_DIR"
PY=${PYTHON:-python3}
LIMIT=${BENCH_LIMIT:-300}

one() {  # one NAME ARGS...: run `rlp-bench ARGS` and keep its last line
  local name=$1; shift
  local t0=$SECONDS
  timeout "$LIMIT" "$PY" -m launch.bench "$@" >"$OUT_DIR/$name.log" 2>&1
  local rc=$?
  local last; last=$(tail -n 1 "$OUT_DIR/$name.log")
  if [[ $rc -eq 0 && $last == \{* ]]; then
    echo "$last" >>"$OUT_DIR/results.jsonl"
  else
    echo "{\"bench\": \"$name\", \"failed\": $rc}" >>"$OUT_DIR/results.jsonl"
    tail -n 5 "$OUT_DIR/$name.log"
  fi
  echo "$name: rc=$rc $((SECONDS - t0))s $last"
}

for part in $PARTS; do
  case $part in
    peak) one peak peak ;;
    model)  # attention remat batch loss_chunk (b8 with full logits and no remat runs out of memory)
      for v in "cudnn dots 8 1024" "cudnn none 8 1024" "cudnn dots 16 1024" "cudnn dots 8 0" \
               "xla full 4 1024"; do
        set -- $v
        one "model_llama1b_$1_$2_b$3_c$4" model --model=llama-1b --dtype=bfloat16 --batch=$3 \
          --seq=2048 --attention=$1 --remat=$2 --loss_chunk=$4 --iters=5
      done ;;
    peer)  # the transformers step first, its memory freed, then ours (bench/model.py)
      XLA_PYTHON_CLIENT_PREALLOCATE=false one model_llama1b_peer model --model=llama-1b \
        --dtype=bfloat16 --batch=4 --seq=2048 --attention=cudnn --remat=dots --iters=5 --peer
      XLA_PYTHON_CLIENT_PREALLOCATE=false one model_smollm2_peer model --model=smollm2-shape \
        --dtype=bfloat16 --batch=8 --seq=2048 --attention=cudnn --remat=dots --iters=5 --peer ;;
    rlp)
      XLA_PYTHON_CLIENT_PREALLOCATE=false one rlp_smollm2_peer rlp-step --model=smollm2-shape \
        --dtype=bfloat16 --iters=3 --peer
      XLA_PYTHON_CLIENT_PREALLOCATE=false one rlp_llama1b rlp-step --model=llama-1b \
        --dtype=bfloat16 --contexts=8 --context_len=1024 --group=8 --thought=256 --iters=2
      # where the update, the EMA scoring and the CPT step go, per kind of XLA operation
      XLA_PYTHON_CLIENT_PREALLOCATE=false one rlp_smollm2_profile rlp-step \
        --model=smollm2-shape --dtype=bfloat16 --iters=2 --profile ;;
    sampler)
      XLA_PYTHON_CLIENT_PREALLOCATE=false one sampler_smollm2_peer sampler --model=smollm2-shape \
        --dtype=bfloat16 --docs=4 --iters=3 --peer
      # 256 decode streams (16 docs x 4 positions x G 4): decode_over_bound at the batch the
      # speed target names, then where the step goes per kind of XLA operation
      XLA_PYTHON_CLIENT_PREALLOCATE=false one sampler_smollm2_256 sampler --model=smollm2-shape \
        --dtype=bfloat16 --docs=16 --iters=3
      # the same with the decode loop's layers unrolled (the CPU's default; scanned is the default
      # on accelerators until this says otherwise)
      XLA_PYTHON_CLIENT_PREALLOCATE=false one sampler_smollm2_256_unroll sampler \
        --model=smollm2-shape --dtype=bfloat16 --docs=16 --iters=3 --decode_layers=unroll
      XLA_PYTHON_CLIENT_PREALLOCATE=false one sampler_smollm2_256_profile sampler \
        --model=smollm2-shape --dtype=bfloat16 --docs=16 --iters=2 --profile ;;
    *) echo "unknown part $part"; exit 2 ;;
  esac
done
