#!/usr/bin/env bash
# Issue 22's GPU checks as one prepared run on a lent GPU machine (the device tool), under
# 10 minutes, results in $OUT:
#   here, once:  bash bench/gpu.sh --wheels    # cp312 wheels of what the GPU image lacks
#   there:       run(command='bash bench/gpu.sh', carry=['.wheels'], timeout_s=600)
# In order of worth, each with its own time limit: the COCO config's step fed by the pipeline
# from JPEG files (one worker per core) against one batch on the device (bench fed); the bf16
# train step against torchvision AMP, frozen / batch / group norm (bench train_step); where
# the step's device time goes (bench.profile); the input pipeline with 1, 2 and one worker per
# core on the host's cores (bench input). The GPU image has JAX, flax, optax, orbax, OpenCV,
# PIL, torch and torchvision, not grain, ml_collections or pycocotools (device/KINDS.md).
set -uo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = --wheels ]; then
  rm -rf .wheels && mkdir .wheels
  pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .wheels grain ml_collections pycocotools
  ls .wheels
  exit
fi
out=${OUT:-/tmp/gpu-bench}
mkdir -p "$out"
python3 -m pip install -q --no-index --find-links .wheels grain ml_collections pycocotools
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv | tee "$out/gpu.txt"
step() {  # step NAME SECONDS ARGS...: one bench, its log and JSON in $out
  local name=$1 limit=$2; shift 2
  timeout "$limit" python3 "$@" 2>&1 | tee "$out/$name.log"
  echo "$name: exit ${PIPESTATUS[0]}" | tee -a "$out/summary.txt"
}
step fed 180 -m bench fed --device gpu --json "$out/fed.json"
step train_step 210 -m bench train_step --device gpu --json "$out/train_step.json"
step profile 90 -m bench.profile --size 1024 --batch 16 --dtype bfloat16
step input 90 -m bench input --json "$out/input.json"
