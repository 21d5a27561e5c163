#!/usr/bin/env bash
# Equal-time screening of width and depth for the bundled tokenizer (examples/screen_width.yaml):
# every candidate trains from scratch side by side (one thread each, so all see the same
# contention) for the config's max_minutes, then each is scored on the held-out-by-source set.
#   bash scripts/screen_width.sh [MINUTES] [EVAL_CLIPS]      # results: out/screen/summary.jsonl
# Needs data/train (scripts/make_train_data.py) and data/eval (scripts/make_eval_data.py).
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-10}
clips=${2:-10}
export RAY_USAGE_STATS_ENABLED=0 OMP_NUM_THREADS=1
# name channels num_res_blocks
candidates=("c32r1 32 1" "c64r1 64 1" "c64r2 64 2")
mkdir -p out/screen
for c in "${candidates[@]}"; do
  read -r name ch rb <<< "$c"
  .venv/bin/tokenmill train-tokenizer examples/screen_width.yaml --set "max_minutes=$minutes" \
    --set "model.overrides.channels=$ch" --set "model.overrides.num_res_blocks=$rb" \
    --set "output_dir=../out/screen/$name" > "out/screen/$name.log" 2>&1 &
done
wait
: > out/screen/summary.jsonl
for c in "${candidates[@]}"; do
  read -r name ch rb <<< "$c"
  steps=$(tail -n 1 "out/screen/$name/train_log.jsonl" | .venv/bin/python -c "import json,sys; print(json.load(sys.stdin)['step'])")
  .venv/bin/tokenmill eval --tokenizer "out/screen/$name/last.pt" --shards data/eval/shards-*.tar \
    --max-clips "$clips" --json > "out/screen/$name.eval.json"
  .venv/bin/python - "$name" "$ch" "$rb" "$steps" "out/screen/$name.eval.json" >> out/screen/summary.jsonl <<'PY'
import json, sys
name, ch, rb, steps, path = sys.argv[1:]
r = json.load(open(path))
print(json.dumps({"name": name, "channels": int(ch), "num_res_blocks": int(rb), "steps": int(steps),
                  "psnr": r["psnr"], "baseline_psnr": r["baseline_psnr"], "gain_db": r["psnr_gain_db"]}))
PY
done
cat out/screen/summary.jsonl
