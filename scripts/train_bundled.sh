#!/usr/bin/env bash
# Retrains the bundled tokenizer DV4x8x8-mill from random init, in its three stages (see its
# MODEL_CARD.md): 64x64 crops from scratch; whole 256x256 frames from stage one's weights (exported
# to the bundled file); then the same on the broader data of scripts/make_train_data.py, from the
# bundled file, overwriting it. The held-out-by-source eval set is built too (data/eval).
# Each stage resumes from its own out/train-bundled*/last.pt, so rerunning this after an
# interruption continues where it stopped; a finished stage only re-exports its result.
# On a GPU machine the same commands run on CUDA (device: auto, bf16 autocast).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export RAY_USAGE_STATS_ENABLED=0
[ -f data/train/shards-000000.tar ] || .venv/bin/python scripts/make_train_data.py
[ -f data/eval/shards-000000.tar ] || .venv/bin/python scripts/make_eval_data.py
.venv/bin/tokenmill train-tokenizer examples/train_bundled.yaml
.venv/bin/tokenmill train-tokenizer examples/train_bundled_finetune.yaml
.venv/bin/tokenmill train-tokenizer examples/train_bundled_broad.yaml
.venv/bin/tokenmill eval --tokenizer DV4x8x8-mill --shards 'data/eval/shards-*.tar'
