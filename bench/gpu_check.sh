#!/usr/bin/env bash
# The device check (docs/execution.md, "GPU"): one H100/H200, python3 with a CUDA torch, numpy and
# opencv; no Ray, PyAV or network. Writes gpu_check.json, gpu_check.md and gpu_check.log.
#
#   bench/gpu_check.sh [OUT_DIR] [gpu_check.py options]   OUT_DIR: default $OUT, else out/gpu_check
#   bench/gpu_check.sh out/rehearsal --cpu --quick        the CPU rehearsal (a minute or two)
#
# GPU_CHECK_TIMEOUT_S (default 470) kills a run that overstays; gpu_check.py itself stops starting
# measurements after --budget-s (default 420) and rewrites its reports after every section.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
default_out=out/gpu_check
source scripts/device_out.sh
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"${PYTHON:-python3}" -c 'import torch, numpy, cv2; print("torch", torch.__version__, "cuda", torch.cuda.is_available())' \
    2>&1 | tee "$out/gpu_check.log"
timeout -k 10 "${GPU_CHECK_TIMEOUT_S:-470}" "${PYTHON:-python3}" bench/gpu_check.py --out "$out" "$@" 2>&1 \
    | tee -a "$out/gpu_check.log"
exit "${PIPESTATUS[0]}"
