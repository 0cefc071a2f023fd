#!/usr/bin/env bash
# GPU checks (at most ~8 minutes on one GPU). Run whenever a GPU is at hand and record
# the JSON it prints in docs/benchmarks.md:
#   1. training throughput of a ViT-B-32-sized random model at batch 256 (AMP), raw and
#      with gradient caching;
#   2. FAISS IVF on 1M x 512: build + QPS on the GPU against the CPU (needs `.[gpu]`).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
mkdir -p benchmarks/results
nvidia-smi --query-gpu=name,memory.total --format=csv || echo "nvidia-smi not found"
timeout 300 "$PY" benchmarks/gpu_train.py --steps 30 --batch-size 256 | tee benchmarks/results/gpu_train.json
timeout 240 "$PY" benchmarks/gpu_index.py --n 1000000 | tee benchmarks/results/gpu_index.json
