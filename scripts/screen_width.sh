#!/usr/bin/env bash
# Equal-time screening of width and depth for the bundled tokenizer (examples/screen_width.yaml):
# every candidate trains from scratch side by side (one thread each, so all see the same
# contention) for the config's max_minutes, then each is scored on the validation set (data/val),
# which chooses; the held-out-by-source set (data/eval) is left alone.
#   bash scripts/screen_width.sh [MINUTES] [EVAL_CLIPS]      # results: out/screen/summary.jsonl
#   SCREEN_CANDIDATES="c32r1:32:1 c64r1:64:1 c64lr3:64:1:3e-3" bash scripts/screen_width.sh 30
# Needs data/train (scripts/make_train_data.py) and data/val (scripts/make_eval_data.py --set val).
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-10}
clips=${2:-16}
export RAY_USAGE_STATS_ENABLED=0 OMP_NUM_THREADS=1
# name:channels:num_res_blocks[:lr]  (lr: the config's when left out)
read -r -a candidates <<< "${SCREEN_CANDIDATES:-c32r1:32:1 c64r1:64:1 c64r2:64:2}"

mkdir -p out/screen
for c in "${candidates[@]}"; do
  IFS=: read -r name ch rb lr <<< "$c"
  .venv/bin/tokenmill train-tokenizer examples/screen_width.yaml --set "max_minutes=$minutes" \
    --set "model.overrides.channels=$ch" --set "model.overrides.num_res_blocks=$rb" ${lr:+--set "optim.lr=$lr"} \
    --set "output_dir=../out/screen/$name" > "out/screen/$name.log" 2>&1 &
done
wait
: > out/screen/summary.jsonl
for c in "${candidates[@]}"; do
  IFS=: read -r name ch rb lr <<< "$c"
  .venv/bin/tokenmill eval --tokenizer "out/screen/$name/last.pt" --shards 'data/val/shards-*.tar' \
    --max-clips "$clips" --json > "out/screen/$name.eval.json"
  .venv/bin/python - "$name" "$ch" "$rb" "$minutes" out/screen >> out/screen/summary.jsonl <<'PY'
import json, sys
name, ch, rb, minutes, root = sys.argv[1:]
log = [json.loads(line) for line in open(f"{root}/{name}/train_log.jsonl")]
r = json.load(open(f"{root}/{name}.eval.json"))
print(json.dumps({"name": name, "channels": int(ch), "num_res_blocks": int(rb), "lr": log[-1]["lr"],
                  "minutes": float(minutes), "steps": log[-1]["step"], "train_loss": sum(e["loss"] for e in log[-20:]) / len(log[-20:]),
                  "psnr": r["psnr"], "ssim": r["ssim"], "baseline_psnr": r["baseline_psnr"],
                  "gain_db": r["psnr_gain_db"]}))
PY
done
cat out/screen/summary.jsonl
