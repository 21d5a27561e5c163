"""Helpers for the output-side tests: clips with known ids, written through the real ShardWriter."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from pipeline.records import DeadLetter, ShardStats, clip_key, shard_id
from pipeline.writers.commit import ClipInfo, ShardWriter
from pipeline.writers.fingerprint import job_fingerprint, token_file_metadata
from schemas.jobspec import parse_job_spec

TOKEN_SHAPE = (3, 4, 5)  # [t, h, w]


def make_spec(output_uri: str, storage_options: dict[str, Any] | None = None, **overrides: Any):
    data: dict[str, Any] = {
        "name": "t",
        "input": {"shards": "/data/in-{000000..000003}.tar"},
        "tokenizer": {"name": "DV4x8x8-tiny", "init": "random"},
        "clips": {"num_frames": 9, "resolution": [32, 40]},
        "output": {"uri": output_uri, "storage_options": storage_options or {}},
    }
    sets = [f"{k}={v}" for k, v in overrides.items()]
    return parse_job_spec(data, "/", sets)


def fingerprint_for(spec, weights_hash: str = "w0") -> dict[str, Any]:
    return job_fingerprint(spec, {"levels": [8, 8, 8, 5, 5, 5]}, weights_hash)


def clip_ids(url: str, sample: int, clip: int) -> np.ndarray:
    """Deterministic ids [t, h, w] for one clip, different for every (url, sample, clip)."""
    seed = int.from_bytes(hashlib.sha1(f"{url}|{sample}|{clip}".encode()).digest()[:4], "little")
    return np.random.default_rng(seed).integers(0, 64_000, size=TOKEN_SHAPE, dtype=np.int64)


def clip_info(url: str, sample: int, clip: int) -> ClipInfo:
    sample_key = f"video{sample:03d}"
    return ClipInfo(
        key=clip_key(shard_id(url), sample_key, clip), source_url=url, sample_key=sample_key,
        clip_index=clip, start_frame=9 * clip, num_frames=9, fps=25.0, height=32, width=40,
        meta=json.dumps({"caption": f"sample {sample}"}) if sample % 2 == 0 else None,
    )


def write_shard(output_uri: str, url: str, fingerprint: dict[str, Any], fmt: str = "parquet",
                samples: int = 3, clips: int = 2, storage_options: dict[str, Any] | None = None,
                attempt: int = 1):
    """One shard with `samples` x `clips` clips and one dead letter, committed; returns the record."""
    meta = token_file_metadata(fingerprint, {"levels": [8, 8, 8, 5, 5, 5]}, "w0")
    w = ShardWriter(output_uri, shard_id(url), url, fmt=fmt, file_metadata=meta,
                    storage_options=storage_options, attempt=attempt)
    stats = ShardStats(samples_total=samples + 1, samples_ok=samples, samples_failed=1)
    for s in range(samples):
        for c in range(clips):
            w.add(clip_info(url, s, c), clip_ids(url, s, c), "DV4x8x8-tiny")
    w.add_error(DeadLetter(url, "broken", "decode", "DecodeError", "moov atom not found"))
    stats.failures["decode:DecodeError"] += 1
    return w.commit(stats)
