#!/usr/bin/env bash
# One prepared GPU check for the device machine (issue 3): engine throughput with vitl at P = 896 in bf16,
# targets batched, random weights. Run from the repo root there; prints targets per second.
set -euo pipefail
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv || true
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
out="${OUT:-/tmp}"
python3 bench/propagate.py --encoders vitl --counts 96 --naive-counts --pad 896 --device cuda \
    --precision bf16 --batch-size 16 --write "$out/benchmarks_gpu.md" | tee "$out/gpu_check.log"
