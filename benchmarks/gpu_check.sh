#!/usr/bin/env bash
# GPU checks (at most ~8 minutes on one GPU). Run whenever a GPU is at hand and record
# the JSON it prints in docs/benchmarks.md:
#   1. training throughput of a ViT-B-32-sized random model at batch 256 (AMP), raw and
#      with gradient caching (gpu_train.py);
#   2. the real trainer (`training.trainer.finetune`, AMP, data from disk) on the same
#      model and batch, as a ratio to the raw AMP loop (gpu_finetune.py);
#   3. FAISS IVF on 1M x 512: build + QPS on the GPU against the CPU (needs a FAISS GPU
#      build; without one, the CPU half only).
# Results go to $OUT when it is set (the device tool's folder), else benchmarks/results.
# On a machine without the project's venv (the lent H200), first run
# benchmarks/gpu_wheels.sh here and start the command there as that script prints.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
RESULTS=${OUT:-benchmarks/results}
mkdir -p "$RESULTS"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total --format=csv || echo "nvidia-smi not found"
status=0
timeout 150 "$PY" benchmarks/gpu_train.py --steps 30 --batch-size 256 | tee "$RESULTS/gpu_train.json" || status=1
timeout 180 "$PY" benchmarks/gpu_finetune.py --steps 30 --batch-size 256 | tee "$RESULTS/gpu_finetune.json" || status=1
timeout 150 "$PY" benchmarks/gpu_index.py --n 1000000 | tee "$RESULTS/gpu_index.json" || status=1
exit $status
