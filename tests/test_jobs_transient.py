"""Transient faults are retried, permanent ones written down: one job over an HTTP server that
injects them, against a clean run of the same shards.

    shard 0  the server closes the socket after 300 kB of the first GET  -> retried, whole
    shard 1  the file really is cut short                                -> damaged (exit 1), the
                                                                            damage confirmed by a retry
    shard 2  its decoder child is SIGKILLed on one sample, once          -> sample decoded again
    shard 3  untouched
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from pipeline.readers.isolation import FAULT_ONCE_ENV
from tests.fixtures.faulty_http import FaultyServer
from tests.jobs_helpers import REPO, SMALL, cli_env

pytestmark = pytest.mark.slow


def _run(output, shards, extra_env=None):
    args = [sys.executable, "-m", "jobs.cli", "run", str(REPO / "examples" / "demo.yaml"), "--no-progress",
            "--set", f"output.uri={output}", "--set", f"input.shards={json.dumps(shards)}"]
    for s in SMALL:
        args += ["--set", s]
    return subprocess.run(args, cwd=REPO, env=cli_env(**(extra_env or {})), capture_output=True, text=True,
                          timeout=600)


def _tokens_by_record(output) -> dict[str, dict[str, tuple]]:
    out = {}
    for path in (output / "_manifest").glob("*.json"):
        rec = json.loads(path.read_text())
        table = pq.read_table(output / rec["outputs"]["tokens"]["path"], columns=["key", "tokens"])
        out[rec["shard_id"]] = {r["key"]: tuple(r["tokens"]) for r in table.to_pylist()}
    return out


def test_transient_faults_are_retried_and_only_repeated_damage_is_recorded(tmp_path, sample_shards):
    served = tmp_path / "served"
    served.mkdir()
    for shard in sample_shards:
        shutil.copy(shard, served / shard.name)
    data = sample_shards[1].read_bytes()
    (served / sample_shards[1].name).write_bytes(data[:106_000])  # inside its second sample's video
    server = FaultyServer(root=served)
    try:
        urls = [f"{server.url}/{s.name}" for s in sample_shards]
        server.add_fault(sample_shards[0].name, "cut:300000")
        flag = tmp_path / "decoder-killed"
        faulty = _run(tmp_path / "faulty", urls, {FAULT_ONCE_ENV: f"bigbuckbunny_0066:kill:{flag}"})
        clean = _run(tmp_path / "clean", [urls[0], urls[2], urls[3]])
    finally:
        server.close()
    assert clean.returncode == 0, clean.stderr[-3000:]
    assert faulty.returncode == 1, faulty.stderr[-3000:]
    assert server.injected["cut"] == 1 and flag.exists()  # both faults really happened

    summary = json.loads((tmp_path / "faulty" / "summary.json").read_text())
    (damaged,) = summary["damaged_shards"]
    assert damaged["source_url"] == urls[1] and "same on a fresh read" in damaged["reason"]
    assert summary["shards_done"] == 3 and summary["shards_failed"] == 1 and summary["retries"] == 2
    assert not summary["quarantined"]
    assert not any(r.startswith("decode:Decoder") for r in summary["failures_by_reason"])
    faulty_tokens = _tokens_by_record(tmp_path / "faulty")
    clean_tokens = _tokens_by_record(tmp_path / "clean")
    damaged_id = next(sid for sid in faulty_tokens if sid not in clean_tokens)
    assert {k: v for k, v in faulty_tokens.items() if k != damaged_id} == clean_tokens
    assert faulty_tokens[damaged_id]  # the samples before the damage were kept
