#!/usr/bin/env bash
# Retrains the bundled tokenizer DV4x8x8-mill from random init (see its MODEL_CARD.md): channels 32,
# 64x64 crops of the broader data of scripts/make_train_data.py and the sample clips, in ten
# stages on two cores: examples/train_narrow.yaml from scratch (73 minutes), then
# examples/train_narrow_more.yaml (52 minutes), examples/train_narrow_stage3.yaml (61 minutes on
# a slower day), examples/train_narrow_stage4.yaml (65 minutes), examples/train_narrow_stage6.yaml
# (65 minutes), examples/train_narrow_stage7.yaml (32 minutes), examples/train_narrow_stage8.yaml,
# stage9 and stage10 (26, 26 and 25 minutes) and examples/train_narrow_stage11.yaml (15 minutes),
# each from the one before with a warm restart (stage five, examples/train_narrow_stage5.yaml, is a
# side branch from stage four, not shipped); all but the last export to out/, the last over the
# bundled file; then scored on the held-out-by-source eval set. Rerunning it after an interruption
# resumes from the stage's out/train-narrow{,-more,-stage3,-stage4,-stage6,...,-stage11}/last.pt;
# a finished stage only re-exports its result.
# The previous 64-channel model's three stages are examples/train_bundled{,_finetune,_broad}.yaml.
# On a GPU machine the same commands run on CUDA (device: auto, bf16 autocast).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export RAY_USAGE_STATS_ENABLED=0
[ -f data/train/shards-000000.tar ] || .venv/bin/python scripts/make_train_data.py
[ -f data/eval/shards-000000.tar ] || .venv/bin/python scripts/make_eval_data.py
.venv/bin/tokenmill train-tokenizer examples/train_narrow.yaml
.venv/bin/tokenmill train-tokenizer examples/train_narrow_more.yaml
.venv/bin/tokenmill train-tokenizer examples/train_narrow_stage3.yaml
.venv/bin/tokenmill train-tokenizer examples/train_narrow_stage4.yaml
.venv/bin/tokenmill train-tokenizer examples/train_narrow_stage6.yaml
.venv/bin/tokenmill train-tokenizer examples/train_narrow_stage7.yaml
.venv/bin/tokenmill train-tokenizer examples/train_narrow_stage8.yaml
.venv/bin/tokenmill train-tokenizer examples/train_narrow_stage9.yaml
.venv/bin/tokenmill train-tokenizer examples/train_narrow_stage10.yaml
.venv/bin/tokenmill train-tokenizer examples/train_narrow_stage11.yaml
.venv/bin/tokenmill eval --tokenizer DV4x8x8-mill --shards 'data/eval/shards-*.tar'
