#!/usr/bin/env bash
# Retrains the bundled tokenizer DV4x8x8-mill from random init, in its two stages (see its
# MODEL_CARD.md): 64x64 crops from scratch, then whole 256x256 frames from stage one's weights.
# Each stage resumes from its own out/train-bundled*/last.pt, so rerunning this after an
# interruption continues where it stopped; a finished stage only re-exports its result.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export RAY_USAGE_STATS_ENABLED=0
.venv/bin/tokenmill train-tokenizer examples/train_bundled.yaml
.venv/bin/tokenmill train-tokenizer examples/train_bundled_finetune.yaml
