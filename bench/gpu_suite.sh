#!/usr/bin/env bash
# The accelerator benchmark figures in one go: peak, the model train step (Llama-3.2-1B shape,
# bf16; remat and attention variants; the transformers peer), the RLP step and the sampler.
# Usage: bash bench/gpu_suite.sh [OUTDIR] [part ...]
#   parts: peak model peer rlp sampler (the default: the full set behind the README's tables),
#   and the speed targets' measurements alone, for a short loan of a GPU (run them one part per
#   command, most wanted first):
#     decode     decode_over_bound at 256 streams (SmolLM2 shape, bf16)
#     mfu        the Llama-3.2-1B-shape CPT step's MFU (8 x 2048, cuDNN attention, remat dots)
#     paper512   the RLP step of the paper's model (Qwen3-1.7B shape) at the paper's proportions:
#                context 2048, G 16, thought 512, 8 contexts (52 GiB of 139 by `rlp-bench memory`),
#                each document its own gradient micro-batch, full remat as configs/qwen3_1p7b_rlp.py
#     paper2048  the same with thought 2048 and 4 contexts (90 GiB by the plan)
#     paperpeer  the TRL-style peer beside ours at thought 512, 2 contexts
#     targets    decode, mfu and paper512 in turn; paper: paper512, paper2048, paperpeer
# Each benchmark runs in its own process under a time limit (BENCH_LIMIT seconds, default 300;
# the Qwen3-1.7B runs at least 540), so one failure does not stop the rest; its JSON line goes to
# OUTDIR/results.jsonl and its log to OUTDIR/<name>.log.
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

qwen3_rlp() {  # qwen3_rlp NAME THOUGHT CONTEXTS [extra flags]: the paper's model and proportions
  local name=$1 t=$2 n=$3; shift 3
  LIMIT=$((LIMIT > 540 ? LIMIT : 540)) XLA_PYTHON_CLIENT_PREALLOCATE=false one "$name" rlp-step \
    --model=qwen3-1.7b --dtype=bfloat16 --attention=cudnn --remat=full --context_len=2048 \
    --group=16 --thought="$t" --contexts="$n" --grad_accum="$n" --iters=1 "$@"
}

expanded=""
for part in $PARTS; do  # the named groups
  case $part in
    targets) expanded+=" decode mfu paper512" ;;
    paper) expanded+=" paper512 paper2048 paperpeer" ;;
    *) expanded+=" $part" ;;
  esac
done

for part in $expanded; do
  case $part in
    decode)
      XLA_PYTHON_CLIENT_PREALLOCATE=false one sampler_smollm2_256 sampler --model=smollm2-shape \
        --dtype=bfloat16 --docs=16 --iters=2 ;;
    mfu)
      one model_llama1b_cudnn_dots_b8_c1024 model --model=llama-1b --dtype=bfloat16 --batch=8 \
        --seq=2048 --attention=cudnn --remat=dots --loss_chunk=1024 --iters=3 ;;
    paper512) qwen3_rlp rlp_qwen3_t512 512 8 ;;
    paper2048) qwen3_rlp rlp_qwen3_t2048 2048 4 ;;
    paperpeer) qwen3_rlp rlp_qwen3_t512_peer 512 2 --peer ;;
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
