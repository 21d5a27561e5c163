#!/usr/bin/env bash
# Prepares, on this machine, the bundled tokenizer's GPU training call (scripts/gpu_train.sh):
# builds the training, validation and evaluation data and downloads into .whl/ (git-ignored) the wheels the
# device machine lacks for `tokenmill train-tokenizer` / `tokenmill eval` (the names in
# scripts/device_wheels.txt: pydantic and its parts, braceexpand, PyAV) at the versions of .venv,
# for CPython 3.12 (the device's) and 3.11 (this machine's, for the rehearsal). About 40 MB; it
# prints the device call to make.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
[ -f data/train/packages-000000.tar ] || .venv/bin/python scripts/make_train_data.py
.venv/bin/python scripts/make_eval_data.py --set val  # a few seconds: always the current set of photos
[ -f data/eval/shards-000000.tar ] || .venv/bin/python scripts/make_eval_data.py
mkdir -p .whl
pins=()
for name in $(grep -v '^#' scripts/device_wheels.txt); do
  pins+=("$name==$(.venv/bin/pip show "$name" | awk '/^Version:/{print $2}')")
done
for version in 3.12 3.11; do
  .venv/bin/pip download -q --no-deps --only-binary=:all: --python-version "$version" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "${pins[@]}"
done
du -sh .whl data/train data/val data/eval
echo "device call: bash scripts/gpu_train.sh   (carry: .whl data/train data/val data/eval)"
