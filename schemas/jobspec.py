"""The job spec (YAML): what to read, how to cut clips, which tokenizer, where to write.

Versioned by `JOBSPEC_VERSION`. Each section is a strict pydantic model (`schemas.config.Config`);
`load_job_spec` validates everything before any work starts; errors are `SpecError`s naming the
dotted field. `redacted()` is the only form that may be written to outputs or logs: storage
options are reduced to their key names.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import Field

from schemas.config import Config, SpecError, from_dict, load_yaml, set_dotted, to_dict
from schemas.hubref import hub_ref_for

JOBSPEC_VERSION = 1

Auto = Literal["auto"]


class InputSpec(Config):
    """What to read: WebDataset shards (paths, globs, brace ranges, URLs) and fsspec options."""

    shards: str | list[str]
    storage_options: dict[str, Any] = Field(default_factory=dict)

    def validate(self, path: str) -> None:
        shards = [self.shards] if isinstance(self.shards, str) else self.shards
        if not shards or not all(s.strip() for s in shards):
            raise SpecError(f"{path}.shards", "must name at least one shard (path, glob, range or URL)")


class ShortSide(Config):
    """`clips.resolution: {short_side: S, max_long_side: L}`: aspect kept, see pipeline/readers/clips.py."""

    short_side: int
    max_long_side: int | None = None

    def validate(self, path: str) -> None:
        if self.short_side < 1:
            raise SpecError(f"{path}.short_side", "must be >= 1")
        if self.max_long_side is not None and self.max_long_side < self.short_side:
            raise SpecError(f"{path}.max_long_side", "must be >= short_side or null")


class ClipSpec(Config):
    """How clips are cut from each video: frames per clip (or `all`), sampling rate, stride, size
    ([H, W] or {short_side}), shot splitting, the motion filter."""

    num_frames: int | Literal["all"] = 17
    fps: float | None = None
    stride: int | None = None
    max_clips_per_video: int | None = None
    resolution: tuple[int, int] | ShortSide = (256, 256)
    decoder: Literal["decord", "pyav"] = "pyav"
    decoder_threads: int = 1
    split_scenes: bool = False
    scene_threshold: float = 27.0
    min_motion: float | None = None
    max_frames: int | None = None
    chunk_frames: int = 32

    def validate(self, path: str) -> None:
        if self.decoder_threads < 1:
            raise SpecError(f"{path}.decoder_threads", "must be >= 1")
        if self.num_frames != "all" and self.num_frames < 1:
            raise SpecError(f"{path}.num_frames", "must be >= 1 or all")
        if self.fps is not None and self.fps <= 0:
            raise SpecError(f"{path}.fps", "must be > 0 or null")
        if self.stride is not None and self.stride < 1:
            raise SpecError(f"{path}.stride", "must be >= 1 or null")
        if self.max_clips_per_video is not None and self.max_clips_per_video < 1:
            raise SpecError(f"{path}.max_clips_per_video", "must be >= 1 or null")
        if isinstance(self.resolution, tuple) and min(self.resolution) < 1:
            raise SpecError(f"{path}.resolution", "must be two positive integers [H, W]")
        if self.scene_threshold <= 0:
            raise SpecError(f"{path}.scene_threshold", "must be > 0")
        if self.min_motion is not None and self.min_motion < 0:
            raise SpecError(f"{path}.min_motion", "must be >= 0 or null")
        if self.max_frames is not None and self.max_frames < 2:
            raise SpecError(f"{path}.max_frames", "must be >= 2 or null")
        if self.max_frames is not None and self.num_frames != "all":
            raise SpecError(f"{path}.max_frames", "applies only with num_frames: all")
        if self.chunk_frames < 1:
            raise SpecError(f"{path}.chunk_frames", "must be >= 1")


class TokenizerSpec(Config):
    """Which tokenizer encodes the clips: a preset, bundled name or Hub repo id, weights, dtype, batch size."""

    name: str
    checkpoint: str | None = None
    init: Literal["pretrained", "random"] = "pretrained"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    batch_size: Auto | int = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compile: bool = False
    tf32: bool = True
    refine_steps: int = 0  # > 0: each latent frame refined against the decoder (FSQ, native backend)

    def validate(self, path: str) -> None:
        if isinstance(self.batch_size, int) and self.batch_size < 1:
            raise SpecError(f"{path}.batch_size", "must be >= 1")
        if self.refine_steps < 0:
            raise SpecError(f"{path}.refine_steps", f"must be >= 0, got {self.refine_steps}")
        if self.refine_steps and self.compile:
            raise SpecError(f"{path}.refine_steps", "cannot be combined with tokenizer.compile (the refinement "
                                                    "runs autograd, which the compiled encode does not)")


class OutputSpec(Config):
    """Where tokens are written (local path or s3://...) and in which format."""

    uri: str
    format: Literal["parquet", "webdataset"] = "parquet"
    storage_options: dict[str, Any] = Field(default_factory=dict)


class ResourceSpec(Config):
    """Ray resources: tokenizer actors, GPUs and CPUs per actor, decode workers."""

    num_actors: Auto | int = "auto"
    gpus_per_actor: Auto | float = "auto"
    cpus_per_actor: float = 0.5
    decode_workers: Auto | int = "auto"
    max_batches_in_flight: int = 2
    batches_per_actor: int = 3
    max_actors: Auto | int = "auto"

    def validate(self, path: str) -> None:
        if self.batches_per_actor < 1:
            raise SpecError(f"{path}.batches_per_actor", "must be >= 1")
        if isinstance(self.num_actors, int) and self.num_actors < 1:
            raise SpecError(f"{path}.num_actors", "must be >= 1 or auto")
        if isinstance(self.decode_workers, int) and self.decode_workers < 1:
            raise SpecError(f"{path}.decode_workers", "must be >= 1 or auto")
        if isinstance(self.gpus_per_actor, float) and self.gpus_per_actor < 0:
            raise SpecError(f"{path}.gpus_per_actor", "must be >= 0 or auto")
        if self.cpus_per_actor < 0:
            raise SpecError(f"{path}.cpus_per_actor", "must be >= 0")
        if self.max_batches_in_flight < 1:
            raise SpecError(f"{path}.max_batches_in_flight", "must be >= 1")
        if isinstance(self.max_actors, int) and self.max_actors < 1:
            raise SpecError(f"{path}.max_actors", "must be >= 1 or auto")


class QualitySpec(Config):
    """Round-trip quality monitoring: the fraction of clips decoded back and scored on the actors."""

    sample_rate: float = 0.0

    def validate(self, path: str) -> None:
        if not 0.0 <= self.sample_rate <= 1.0:
            raise SpecError(f"{path}.sample_rate", "must lie in [0, 1]")


class RetrySpec(Config):
    """How often a shard that failed for infrastructure reasons is tried."""

    max_attempts: int = 3
    stop_grace_s: float = 30.0  # on SIGTERM/SIGINT, how long running shards may take to commit
    lease_timeout_s: float = 60.0  # a driver silent this long may be taken over by another

    def validate(self, path: str) -> None:
        if self.max_attempts < 1:
            raise SpecError(f"{path}.max_attempts", "must be >= 1")
        if self.stop_grace_s < 0:
            raise SpecError(f"{path}.stop_grace_s", "must be >= 0")
        if not 1.0 <= self.lease_timeout_s <= 3600.0:
            raise SpecError(f"{path}.lease_timeout_s", "must be between 1 and 3600 seconds")


class LimitSpec(Config):
    """Bounds on what one untrusted sample may cost; each one exceeded is a dead letter naming it.

    Sizes are MiB of the shard's bytes. A sidecar (any member that is not a video) counts as at
    least one 512-byte tar block, so a sample of countless empty members is bounded too.
    """

    max_video_mb: float = 4096.0  # a sample's video members together -> read:MemberTooLarge
    spool_mb: float = 64.0  # a video member above this is streamed to a temporary file, not memory
    max_sidecar_mb: float = 16.0  # a sample's other members together -> read:SidecarTooLarge
    max_frame_pixels: int = 8192 * 4320  # decoded width x height (8K DCI) -> decode:FrameTooLarge
    max_frames: int = 1_000_000  # source frames decoded from one sample -> decode:TooManyFrames
    decode_timeout_s: float = 300.0  # decoder child silent this long -> decode:DecoderTimeout
    max_samples_per_shard: int = 100_000  # samples read from one shard -> shard:TooManySamples

    def validate(self, path: str) -> None:
        for name in ("max_video_mb", "spool_mb", "max_sidecar_mb", "decode_timeout_s"):
            if getattr(self, name) <= 0:
                raise SpecError(f"{path}.{name}", "must be > 0")
        for name in ("max_frame_pixels", "max_frames", "max_samples_per_shard"):
            if getattr(self, name) < 1:
                raise SpecError(f"{path}.{name}", "must be >= 1")

    def in_bytes(self, name: str) -> int:
        """A `*_mb` setting in bytes."""
        return int(getattr(self, name) * 2**20)


class JobSpec(Config):
    """A tokenmill job: what to read, how to cut clips, which tokenizer, where to write."""

    input: InputSpec
    tokenizer: TokenizerSpec
    output: OutputSpec
    name: str = "tokenmill"
    clips: ClipSpec = Field(default_factory=ClipSpec)
    resources: ResourceSpec = Field(default_factory=ResourceSpec)
    retries: RetrySpec = Field(default_factory=RetrySpec)
    limits: LimitSpec = Field(default_factory=LimitSpec)
    quality: QualitySpec = Field(default_factory=QualitySpec)

    def redacted(self) -> dict[str, Any]:
        """The spec as plain data with secrets removed (storage option values dropped)."""
        data = to_dict(self)
        for section in ("input", "output"):
            opts = data[section]["storage_options"]
            data[section]["storage_options"] = {k: "<redacted>" for k in opts}
        return data


def _is_remote(uri: str) -> bool:
    return "://" in uri


def _resolve_path(value: str, base: str) -> str:
    if _is_remote(value) or os.path.isabs(value):
        return value
    return os.path.normpath(os.path.join(base, value))


def resolve_paths(spec: JobSpec, base_dir: str) -> JobSpec:
    """Relative local paths in the spec resolve against the spec file's folder."""
    shards = spec.input.shards
    if isinstance(shards, str):
        shards = _resolve_path(shards, base_dir)
    else:
        shards = [_resolve_path(s, base_dir) for s in shards]
    checkpoint = spec.tokenizer.checkpoint
    if checkpoint is not None and hub_ref_for(checkpoint, base_dir) is None:  # a Hub repo id stays one
        checkpoint = _resolve_path(checkpoint, base_dir)
    return spec.model_copy(update={
        "input": spec.input.model_copy(update={"shards": shards}),
        "tokenizer": spec.tokenizer.model_copy(update={"checkpoint": checkpoint}),
        "output": spec.output.model_copy(update={"uri": _resolve_path(spec.output.uri, base_dir)}),
    })


def parse_job_spec(data: dict[str, Any], base_dir: str = ".", overrides: list[str] | None = None) -> JobSpec:
    """Validate parsed YAML (after applying `--set` overrides) into a JobSpec."""
    for assignment in overrides or []:
        set_dotted(data, assignment)
    spec = from_dict(JobSpec, data)
    return resolve_paths(spec, os.path.abspath(base_dir))


def load_job_spec(path: str, overrides: list[str] | None = None) -> JobSpec:
    """Load and validate a job spec file; raises SpecError naming the bad field."""
    data = load_yaml(path)
    return parse_job_spec(data, os.path.dirname(os.path.abspath(path)), overrides)

