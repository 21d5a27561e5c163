"""The job fingerprint: everything that changes the tokens a job writes, hashed.

Components are keyed by the dotted spec field they come from, so a refusal can name the field
(`clips.num_frames: 17 -> 33`). Fields that do not change tokens (resources, retries,
batch size, name, storage options, input shard list) are deliberately left out: they may
change between a run and its resume. Keys added after the first release enter only when they
differ from their default (`_added_components`), so an older job's fingerprint is unchanged.

`tokenizer.revision` (the Hub commit the weights came from, for Hub repo ids) is recorded and
compared on resume but not hashed into the digest that marks manifest records: the tokens
depend on the weights (`tokenizer.weights_hash`), not on which commit served them. A resume
whose repo moved is refused naming it, unless the spec pins the new commit (`@<commit>`); the
weights hash still refuses it if the weights changed.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from schemas.config import SpecError, to_dict
from schemas.errors import ERRORS_SCHEMA_VERSION
from schemas.hubref import parse_hub_ref
from schemas.jobspec import JobSpec
from schemas.tokens import (
    META_FINGERPRINT,
    META_TOKENIZER_CONFIG,
    META_WEIGHTS_HASH,
    TOKENS_SCHEMA_VERSION,
    check_vocab_size,
)

DIGEST = "digest"
REVISION = "tokenizer.revision"
_NOT_HASHED = (REVISION,)
# how input shards are named (pipeline.records.shard_id): ids of an output made under another
# rule would not match this job's shards, so a resume across the change is refused, not redone
SHARD_IDS = "shard_ids"
SHARD_ID_RULE = "name under the pattern root + size"
_SHARD_ID_HINT = ("the output was written when shard ids hashed each shard's full URL; a resume under "
                  "root-relative ids would tokenize every shard again beside the old files. Its tokens stay "
                  "readable; write this job to a new output.uri")


def _canonical(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _repo_name(name: str) -> str:
    """tokenizer.name without a Hub revision: pinning the commit a job started with is no change."""
    ref = parse_hub_ref(name)
    return ref.repo_id if ref is not None else name


def job_fingerprint(spec: JobSpec, tokenizer_config: dict[str, Any], weights_hash: str,
                    revision: str | None = None) -> dict[str, Any]:
    """Dotted field -> value for everything that changes tokens, plus "digest" over all of them
    (`revision`, "owner/name@commit" for Hub weights, is recorded but not hashed: see above).

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
        "tokenizer.name": _repo_name(spec.tokenizer.name),
        **({REVISION: revision} if revision else {}),
        "tokenizer.weights_hash": weights_hash,
        "tokenizer.dtype": spec.tokenizer.dtype,
        "tokenizer.config": _sha(_canonical(tokenizer_config))[:16],
        "clips.num_frames": clips.num_frames,
        "clips.fps": clips.fps,
        "clips.stride": clips.stride,
        "clips.max_clips_per_video": clips.max_clips_per_video,
        "clips.resolution": _resolution(clips.resolution),
        "clips.decoder": clips.decoder,
        "output.format": spec.output.format,
        "schema_version": f"tokens={TOKENS_SCHEMA_VERSION},errors={ERRORS_SCHEMA_VERSION}",
        **_added_components(spec),
        SHARD_IDS: SHARD_ID_RULE,
    }
    hashed = {k: v for k, v in components.items() if k not in _NOT_HASHED}
    return {**components, DIGEST: _sha(_canonical(hashed))}


def _resolution(resolution: Any) -> Any:
    """[H, W] as the list it always was; {short_side, max_long_side} as a mapping."""
    return list(resolution) if isinstance(resolution, tuple) else to_dict(resolution)


def _added_components(spec: JobSpec) -> dict[str, Any]:
    """Later keys that change which clips are written, their tokens or their columns, when not default.

    chunk_frames is in because a streamed encode equals one pass only up to float rounding
    (ids near an FSQ bin edge can flip); quality.sample_rate because it adds columns."""
    clips = spec.clips
    added: dict[str, Any] = {}
    if clips.split_scenes:
        added.update({"clips.split_scenes": True, "clips.scene_threshold": clips.scene_threshold})
    if clips.min_motion is not None:
        added["clips.min_motion"] = clips.min_motion
    if clips.num_frames == "all":
        added.update({"clips.max_frames": clips.max_frames, "clips.chunk_frames": clips.chunk_frames})
    if spec.quality.sample_rate > 0:
        added["quality.sample_rate"] = spec.quality.sample_rate
    if spec.tokenizer.refine_steps:
        added["tokenizer.refine_steps"] = spec.tokenizer.refine_steps
    return added


def fingerprint_differences(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(field, old value, new value) for each component that differs (the digest excluded)."""
    names = [k for k in dict.fromkeys([*old, *new]) if k != DIGEST]
    return [(k, old.get(k), new.get(k)) for k in names if _canonical(old.get(k)) != _canonical(new.get(k))]


def resume_differences(old: dict[str, Any], new: dict[str, Any], spec: JobSpec) -> list[tuple[str, Any, Any]]:
    """The differences that refuse a resume: all of them, except a new Hub revision that the
    spec pins by its commit (the user chose it; the weights hash still guards the tokens)."""
    pinned = set()
    for value in (spec.tokenizer.name, spec.tokenizer.checkpoint):
        ref = parse_hub_ref(value) if value else None
        if ref is not None and ref.pinned:
            pinned.add(str(ref))
    return [d for d in fingerprint_differences(old, new) if not (d[0] == REVISION and d[2] in pinned)]


def describe_differences(diffs: list[tuple[str, Any, Any]]) -> str:
    text = "; ".join(f"{name}: {_canonical(a)} -> {_canonical(b)}" for name, a, b in diffs)
    moved = [(a, b) for name, a, b in diffs if name == REVISION and a and b]
    if moved:
        old, new = moved[0]
        weights_too = any(name == "tokenizer.weights_hash" for name, _, _ in diffs)
        text += (f". The Hub repo moved since this output was started: pin {old} to resume with the weights it was "
                 "made with" + ("; its weights changed, so the new revision needs a new output.uri" if weights_too
                                else f", or pin {new} to accept the new revision (same weights)"))
    if any(name == SHARD_IDS and a is None for name, a, _ in diffs):
        text += f" ({_SHARD_ID_HINT})"
    return text


def token_file_metadata(fingerprint: dict[str, Any], tokenizer_config: dict[str, Any],
                        weights_hash: str) -> dict[str, str]:
    """Key-value metadata for every token file of the job (pass to ShardWriter's file_metadata)."""
    return {
        META_TOKENIZER_CONFIG: _canonical(tokenizer_config),
        META_WEIGHTS_HASH: weights_hash,
        META_FINGERPRINT: _canonical(fingerprint),
    }
