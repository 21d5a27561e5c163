#!/usr/bin/env bash
# Quick start 1: set up, then tokenize the bundled sample shards on an embedded local Ray.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export RAY_USAGE_STATS_ENABLED=0
.venv/bin/tokenmill run examples/demo.yaml "$@"
