#!/usr/bin/env bash
# The bundled tokenizer's GPU training: one device call that continues DV4x8x8-mill on the broad
# training data (examples/train_bundled_gpu.yaml) and returns the exported model with its checks.
# Prepare it here with scripts/prepare_gpu_train.sh, then on the device (python3 with a CUDA
# torch, PyYAML, fsspec; nothing fetched):
#
#   bash scripts/gpu_train.sh [OUT_DIR] [--set K=V ...]     carry: .whl data/train data/val data/eval
#
# OUT_DIR (default $OUT, else out/gpu_train) receives model.pt (fp16, the EMA weights),
# train_log.jsonl, gpu_train.log and the checks of the result: colour.json (flat colours,
# scripts/colour_check.py), eval_shard3.json (data/sample shard 3, near the training domain),
# eval_val.json (data/val, held out by source: what decides whether the result is shipped) and
# eval_unseen.json (data/eval, held out by source, scored once, after training). Extra arguments
# go to `tokenmill train-tokenizer`. GPU_TRAIN_MINUTES (default 7) is the training's max_minutes
# (it stops there with a checkpoint and the export; reading the clips and the checks take about
# two minutes more), so after the device check a session gives it what is left; a hard timeout
# of 2 minutes more kills an overstaying run. GPU_TRAIN_MAX_CLIPS (default: all) bounds each eval.
# The rehearsal on a CPU: bash scripts/gpu_train.sh out/rehearsal --set steps=2 --set batch_size=1
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
default_out=out/gpu_train
source scripts/device_out.sh
py="${PYTHON:-python3}"
log="$out/gpu_train.log"
export PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0
limit=()
[ -n "${GPU_TRAIN_MAX_CLIPS:-}" ] && limit=(--max-clips "$GPU_TRAIN_MAX_CLIPS")
[ -f data/train/packages-000000.tar ] || echo "gpu_train: data/train (with packages-*.tar) is missing" \
    "(scripts/prepare_gpu_train.sh builds it; carry it), so the config's shards will not all be found" | tee "$log"
site="$(mktemp -d)"
if [ -d .whl ]; then  # the wheels this machine lacks (pip picks the ones for its python)
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" --find-links .whl \
        -r scripts/device_wheels.txt 2>&1 | tee -a "$log" || exit 2
fi
export PYTHONPATH="$PWD:$site${PYTHONPATH:+:$PYTHONPATH}"
"$py" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
          torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")' 2>&1 | tee -a "$log"
run="$out/../gpu_train_run"  # checkpoints with optimizer state stay out of OUT_DIR (too large to return)
minutes="${GPU_TRAIN_MINUTES:-7}"
timeout -k 10 "$(awk -v m="$minutes" 'BEGIN { print int(m * 60 + 120) }')" \
    "$py" -m jobs.cli train-tokenizer examples/train_bundled_gpu.yaml --set "output_dir=$run" \
    --set "export.path=$out/model.pt" --set "max_minutes=$minutes" "$@" 2>&1 | tee -a "$log"
rc=${PIPESTATUS[0]}
cp "$run/train_log.jsonl" "$out/" 2>/dev/null
if [ -f "$out/model.pt" ]; then
    "$py" scripts/colour_check.py --tokenizer "$out/model.pt" --json "$out/colour.json" 2>&1 | tee -a "$log"
    "$py" -m jobs.cli eval --tokenizer "$out/model.pt" --shards data/sample/shards-000003.tar --json "${limit[@]}" \
        > "$out/eval_shard3.json" 2>> "$log"
    for set in val:eval_val eval:eval_unseen; do
        if [ -f "data/${set%%:*}/shards-000000.tar" ]; then
            "$py" -m jobs.cli eval --tokenizer "$out/model.pt" --shards "data/${set%%:*}/shards-*.tar" --json \
                "${limit[@]}" > "$out/${set#*:}.json" 2>> "$log"
        fi
    done
    "$py" - "$out" <<'PY' 2>&1 | tee -a "$log"
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
for name in ("eval_shard3.json", "eval_val.json", "eval_unseen.json"):
    if (out / name).is_file() and (out / name).stat().st_size:
        s = json.loads((out / name).read_text())
        print(f"{name}: {s['clips']} clips, {s['psnr']:.2f} dB vs baseline {s['baseline_psnr']:.2f} dB "
              f"({s['psnr_gain_db']:+.2f} dB)")
PY
fi
exit "$rc"
