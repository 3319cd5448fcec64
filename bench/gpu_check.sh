#!/usr/bin/env bash
# The GPU check of issue 22 in one go (about 3-6 minutes on one CUDA GPU; budget 8): fp32 parity vs CPU on
# the bundled sample, fp32/bf16/fp16 autocast throughput and peak memory for the embedded model and for
# ViT-L at P = 896 with batched targets, optional torch.compile. Writes one markdown table to
# $OUT/gpu_check.md (default /tmp) and a log beside it. Run from the repository root.
#   bash bench/gpu_check.sh              # on the device machine
#   bash bench/gpu_check.sh --compile    # also torch.compile'd encoders
#   bash bench/gpu_check.sh --dry-run    # CPU smoke run of every step (no GPU needed; numbers meaningless)
set -euo pipefail
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."
out="${OUT:-/tmp}"
mkdir -p "$out"
python="${PYTHON:-python3}"
[ -x .venv/bin/python ] && python=.venv/bin/python
dry=0
for arg in "$@"; do [ "$arg" = "--dry-run" ] && dry=1; done
if [ "$dry" = 0 ]; then
    nvidia-smi --query-gpu=name,memory.total --format=csv || echo "nvidia-smi not found"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the package from this checkout, installed or not
"$python" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
if ! "$python" -c "import sine_model, scipy, skimage, sklearn, safetensors, imageio, tifffile" 2>/dev/null; then
    echo "sine_model or its dependencies cannot be imported with $python: pip install -e . first" >&2
    exit 2
fi
limit=480  # the 8-minute budget of a GPU run; a dry run on a busy CPU may take longer
[ "$dry" = 1 ] && limit=3600
timeout "$limit" "$python" bench/gpu_check.py --out "$out/gpu_check.md" "$@" 2>&1 | tee "$out/gpu_check.log"
echo "table: $out/gpu_check.md"
