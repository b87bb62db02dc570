#!/usr/bin/env bash
# The whole latent-reasoning benchmark, one job at a time (2 shared CPU cores: never two
# trainings at once). Every stage is resumable: rerun this script and finished checkpoints
# and finished bench items are skipped. Logs: $RUNS/*.log.
set -u
LT=${LT:-.venv/bin/leanthink}
RUNS=${RUNS:-/work/runs/latent}
N_EVAL=${N_EVAL:-100}  # written once; each bench scores the first N_BENCH (60) of them
COMMON="--model smollm2-135m --task chain --batch-size 8 --threads 1 --save-every 10 --log-every 2"
mkdir -p "$RUNS"
[ -f "$RUNS/eval.jsonl" ] || $LT train latent-data "$RUNS/eval.jsonl" --task chain --n "$N_EVAL"

train() {  # train NAME ARGS...: skip when the checkpoint is finished, resume when interrupted
  local name=$1; shift
  [ -f "$RUNS/$name/latent.json" ] && return 0
  local resume=""; [ -f "$RUNS/$name/state/state.json" ] && resume="--resume"
  $LT train latent "$@" --out "$RUNS/$name" $resume >>"$RUNS/$name.log" 2>&1
}

bench() {  # bench NAME METHOD: every eval item, greedy, one thread
  [ -f "$RUNS/$1/latent.json" ] || return 0
  $LT bench --model "$RUNS/$1?threads=1" --dataset "jsonl:$RUNS/eval.jsonl?kind=number" \
    --methods "$2" --out "$RUNS/bench-$1" --no-oracle --limit "${N_BENCH:-60}" >>"$RUNS/bench-$1.log" 2>&1
}

train cot-sft cot-sft $COMMON --steps 40 --lr 2e-4;                         bench cot-sft latent-sft
train nocot-sft nocot-sft $COMMON --steps 30 --lr 2e-4;                     bench nocot-sft latent-sft
# Coconut starts from the CoT-SFT checkpoint, as the reference does (stage 0 = that training).
train coconut coconut ${COMMON/smollm2-135m/$RUNS/cot-sft} --first-stage 1 --steps 24 --lr 2e-4;  bench coconut coconut
train codi codi $COMMON --steps 20 --lr 2e-4 --proj-lr 1e-3;                bench codi codi
train lightthinker lightthinker $COMMON --steps 24 --lr 2e-4 --n-gist 2;    bench lightthinker lightthinker
# SoftCoT: frozen main = the CoT-SFT model, frozen assistant = the base model; projection only.
train softcot softcot ${COMMON/smollm2-135m/$RUNS/cot-sft} --assistant smollm2-135m --steps 24 --proj-lr 1e-3; bench softcot softcot
echo "all done $(date -u)" >>"$RUNS/run_all.log"
