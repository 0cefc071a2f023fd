#!/usr/bin/env bash
# Wheels that benchmarks/gpu_check.sh needs on the lent H200 beyond what its image holds
# (Python 3.12 with torch, timm, transformers, numpy, pillow, pyyaml, pyarrow; nothing can be
# fetched there). Run here, in the repo root; it fills .whl/ (git-ignored through
# .git/info/exclude, ~24 MB) and prints the device command. A FAISS GPU build is not among
# them: faiss-gpu-cu12 needs the CUDA 12 runtime and cuBLAS wheels (~0.5 GB), over the
# 64 MiB the device tool carries, so gpu_index.py reports its CPU half there.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl && mkdir .whl
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d .whl \
  'open_clip_torch>=3.0' ftfy wcwidth 'pydantic>=2.7' pydantic-core annotated-types typing-inspection typing-extensions 'faiss-cpu>=1.9'
du -sh .whl
cat <<'CMD'
Device command (carry: [".whl"]):
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site && PY=python3 bash benchmarks/gpu_check.sh
CMD
