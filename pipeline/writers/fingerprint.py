"""The job fingerprint: everything that changes the tokens a job writes, hashed.

Components are keyed by the dotted spec field they come from, so a refusal can name the field
(`clips.num_frames: 17 -> 33`). Fields that do not change tokens (resources, retries,
batch size, name, storage options, input shard list) are deliberately left out: they may
change between a run and its resume.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from schemas.config import SpecError
from schemas.errors import ERRORS_SCHEMA_VERSION
from schemas.jobspec import JobSpec
from schemas.tokens import (
    META_FINGERPRINT,
    META_TOKENIZER_CONFIG,
    META_WEIGHTS_HASH,
    TOKENS_SCHEMA_VERSION,
    check_vocab_size,
)

DIGEST = "digest"


def _canonical(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def job_fingerprint(spec: JobSpec, tokenizer_config: dict[str, Any], weights_hash: str) -> dict[str, Any]:
    """Dotted field -> value for everything that changes tokens, plus "digest" over all of them.

    Also the earliest place a job sees its tokenizer's config: a vocabulary that uint16 ids
    cannot hold is refused here, as a SpecError on tokenizer.name (exit 2, nothing written).
    """
    vocab = tokenizer_config.get("vocab_size")
    if isinstance(vocab, int):
        try:
            check_vocab_size(vocab, spec.tokenizer.name)
        except ValueError as exc:
            raise SpecError("tokenizer.name", str(exc)) from None
    clips = spec.clips
    components: dict[str, Any] = {
        "tokenizer.name": spec.tokenizer.name,
        "tokenizer.weights_hash": weights_hash,
        "tokenizer.dtype": spec.tokenizer.dtype,
        "tokenizer.config": _sha(_canonical(tokenizer_config))[:16],
        "clips.num_frames": clips.num_frames,
        "clips.fps": clips.fps,
        "clips.stride": clips.stride,
        "clips.max_clips_per_video": clips.max_clips_per_video,
        "clips.resolution": list(clips.resolution),
        "clips.decoder": clips.decoder,
        "output.format": spec.output.format,
        "schema_version": f"tokens={TOKENS_SCHEMA_VERSION},errors={ERRORS_SCHEMA_VERSION}",
    }
    return {**components, DIGEST: _sha(_canonical(components))}


def fingerprint_differences(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(field, old value, new value) for each component that differs (the digest excluded)."""
    names = [k for k in dict.fromkeys([*old, *new]) if k != DIGEST]
    return [(k, old.get(k), new.get(k)) for k in names if _canonical(old.get(k)) != _canonical(new.get(k))]


def describe_differences(diffs: list[tuple[str, Any, Any]]) -> str:
    return "; ".join(f"{name}: {_canonical(a)} -> {_canonical(b)}" for name, a, b in diffs)


def token_file_metadata(fingerprint: dict[str, Any], tokenizer_config: dict[str, Any],
                        weights_hash: str) -> dict[str, str]:
    """Key-value metadata for every token file of the job (pass to ShardWriter's file_metadata)."""
    return {
        META_TOKENIZER_CONFIG: _canonical(tokenizer_config),
        META_WEIGHTS_HASH: weights_hash,
        META_FINGERPRINT: _canonical(fingerprint),
    }
