"""Helpers shared by the jobs tests: running the CLI as a real process and reading outputs back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "examples" / "demo.yaml"
# small and fast on a shared 2-core machine: 64x64 clips, 9 frames, the tiny random tokenizer
SMALL = ["clips.resolution=[64,64]", "clips.num_frames=9", "clips.max_clips_per_video=2",
         "tokenizer.batch_size=2"]


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=str(REPO))
    env.pop("RAY_ADDRESS", None)
    env.update(extra)
    return env


def run_args(output: Path, *sets: str, spec: Path = DEMO, address: str | None = None) -> list[str]:
    args = [sys.executable, "-m", "jobs.cli", "run", str(spec), "--no-progress", "--set", f"output.uri={output}"]
    for s in sets:
        args += ["--set", s]
    if address:
        args += ["--address", address]
    return args


def run_cli(output: Path, *sets: str, spec: Path = DEMO, address: str | None = None,
            timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(run_args(output, *sets, spec=spec, address=address), cwd=REPO,
                          env=cli_env(**(env or {})), capture_output=True, text=True, timeout=timeout)


def read_summary(output: Path) -> dict[str, Any]:
    return json.loads((output / "summary.json").read_text())


def read_tokens(output: Path) -> dict[str, tuple]:
    """key -> (tokens as a tuple, token_shape) over every published token file; fails on duplicates."""
    rows: dict[str, tuple] = {}
    for path in sorted((output / "tokens").glob("*.parquet")):
        table = pq.read_table(path)
        for row in table.select(["key", "tokens", "token_shape"]).to_pylist():
            assert row["key"] not in rows, f"duplicate key {row['key']}"
            rows[row["key"]] = (tuple(row["tokens"]), tuple(row["token_shape"]))
    return rows


def manifest_ids(output: Path) -> set[str]:
    folder = output / "_manifest"
    return {p.stem for p in folder.glob("*.json")} if folder.exists() else set()


TOTALS = ("shards_total", "shards_done", "shards_failed", "samples_total", "samples_ok", "samples_failed",
          "clips_written", "tokens_written")


def totals(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: summary[k] for k in TOTALS}
