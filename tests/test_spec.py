"""Job spec loading and validation (schemas/jobspec.py, schemas/config.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import jsonschema
import pytest
import yaml

from pipeline.writers.fingerprint import job_fingerprint
from schemas.config import SpecError, from_dict, json_schema
from schemas.jobspec import ClipSpec, JobSpec, load_job_spec, parse_job_spec
from schemas.training import TrainConfig, load_train_config

REPO = Path(__file__).resolve().parents[1]

MINIMAL = {
    "input": {"shards": "data/x-{000000..000001}.tar"},
    "tokenizer": {"name": "DV4x8x8-tiny", "init": "random"},
    "output": {"uri": "out/x"},
}


def _spec(**sections):
    data = {k: dict(v) for k, v in MINIMAL.items()}
    for section, values in sections.items():
        if isinstance(values, dict):
            data.setdefault(section, {}).update(values)
        else:
            data[section] = values
    return data


def test_minimal_spec_gets_interface_defaults(tmp_path):
    spec = parse_job_spec(_spec(), base_dir=str(tmp_path))
    assert spec.clips.num_frames == 17
    assert spec.clips.resolution == (256, 256)
    assert spec.output.format == "parquet"
    assert spec.resources.num_actors == "auto"
    assert spec.retries.max_attempts == 3


def test_relative_paths_resolve_against_spec_folder(tmp_path):
    path = tmp_path / "sub" / "job.yaml"
    path.parent.mkdir()
    path.write_text(textwrap.dedent("""
        input: {shards: [a.tar, s3://bucket/b.tar]}
        tokenizer: {name: DV4x8x8-tiny, init: random}
        output: {uri: ../out}
    """))
    spec = load_job_spec(str(path))
    assert spec.input.shards == [str(tmp_path / "sub" / "a.tar"), "s3://bucket/b.tar"]
    assert spec.output.uri == str(tmp_path / "out")


@pytest.mark.parametrize(
    ("sections", "field"),
    [
        ({"clips": {"num_frames": "seventeen"}}, "clips.num_frames"),
        ({"clips": {"resolution": [256]}}, "clips.resolution"),
        ({"clips": {"bogus": 1}}, "clips.bogus"),
        ({"tokenizer": {"dtype": "float8"}}, "tokenizer.dtype"),
        ({"tokenizer": {"batch_size": 0}}, "tokenizer.batch_size"),
        ({"tokenizer": {"batch_size": "big"}}, "tokenizer.batch_size"),
        ({"clips": {"decoder_threads": 0}}, "clips.decoder_threads"),
        ({"resources": {"batches_per_actor": 0}}, "resources.batches_per_actor"),
        ({"output": {"format": "csv"}}, "output.format"),
        ({"resources": {"num_actors": "many"}}, "resources.num_actors"),
        ({"retries": {"max_attempts": True}}, "retries.max_attempts"),
        ({"extra_section": {}}, "extra_section"),
        ({"clips": {"fps": "8"}}, "clips.fps"),
        ({"clips": {"resolution": [True, 64]}}, "clips.resolution[0]"),
        ({"input": {"shards": ["a.tar", 3]}}, "input.shards[1]"),
        ({"clips": {"resolution": {"short_side": 0}}}, "clips.resolution.short_side"),
        ({"clips": {"resolution": {"short_side": 256, "max_long_side": 128}}}, "clips.resolution.max_long_side"),
        ({"clips": {"min_motion": -1}}, "clips.min_motion"),
        ({"clips": {"max_frames": 100}}, "clips.max_frames"),  # only with num_frames: all
        ({"clips": {"split_scenes": "yes"}}, "clips.split_scenes"),
        ({"quality": {"sample_rate": 1.5}}, "quality.sample_rate"),
        ({"tokenizer": {"refine_steps": -1}}, "tokenizer.refine_steps"),
        ({"tokenizer": {"refine_steps": 50, "compile": True}}, "tokenizer.refine_steps"),
    ],
)
def test_bad_field_is_named(sections, field, tmp_path):
    with pytest.raises(SpecError) as info:
        parse_job_spec(_spec(**sections), base_dir=str(tmp_path))
    assert info.value.field == field
    assert str(info.value).startswith(field)


def test_world_model_keys_parse(tmp_path):
    """The keys outside tests drive: short_side resolution, num_frames all, shots, motion, quality."""
    from schemas.jobspec import ShortSide

    spec = parse_job_spec(_spec(clips={"num_frames": "all", "resolution": {"short_side": 256, "max_long_side": 512},
                                       "split_scenes": True, "min_motion": 2.0, "max_frames": 257},
                                quality={"sample_rate": 0.05}), base_dir=str(tmp_path))
    assert spec.clips.resolution == ShortSide(short_side=256, max_long_side=512) and spec.clips.num_frames == "all"
    assert spec.clips.split_scenes and spec.clips.min_motion == 2.0 and spec.quality.sample_rate == 0.05
    assert spec.clips.decoder == "pyav"  # the fastest measured (docs/data.md)
    assert parse_job_spec(_spec(), str(tmp_path), ["clips.resolution={short_side: 128}"]).clips.resolution == ShortSide(short_side=128)


def test_missing_required_field_is_named(tmp_path):
    data = _spec()
    del data["output"]
    with pytest.raises(SpecError, match="^output: required"):
        parse_job_spec(data, base_dir=str(tmp_path))


def test_set_overrides_apply_before_validation(tmp_path):
    spec = parse_job_spec(_spec(), str(tmp_path), ["output.uri=/tmp/elsewhere", "clips.fps=8", "clips.resolution=[64, 64]"])
    assert spec.output.uri == "/tmp/elsewhere"
    assert spec.clips.fps == 8.0
    assert spec.clips.resolution == (64, 64)
    with pytest.raises(SpecError, match="^clips.num_frames"):
        parse_job_spec(_spec(), str(tmp_path), ["clips.num_frames=abc"])


def test_exponent_without_a_dot_is_a_number_in_files_and_overrides(tmp_path):
    """YAML 1.1 reads `1e-4` as a string; configs and --set read it as the number users mean."""
    path = tmp_path / "train.yaml"
    path.write_text("data: {shards: x.tar}\nmodel: {name: DV4x8x8}\noutput_dir: o\nsteps: 10\noptim: {lr: 3e-4, weight_decay: 1E-2}\n")
    cfg = load_train_config(str(path), ["optim.min_lr_ratio=5e-2"])
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.min_lr_ratio) == (3e-4, 1e-2, 5e-2)
    spec = parse_job_spec(_spec(), str(tmp_path), ["clips.fps=1e1", "name=1e3x"])
    assert spec.clips.fps == 10.0 and spec.name == "1e3x"


def test_redacted_spec_hides_storage_secrets(tmp_path):
    spec = parse_job_spec(
        _spec(input={"storage_options": {"key": "AKIA-SECRET", "secret": "hunter2"}}), str(tmp_path)
    )
    text = repr(spec.redacted())
    assert "hunter2" not in text and "AKIA-SECRET" not in text
    assert spec.redacted()["input"]["storage_options"] == {"key": "<redacted>", "secret": "<redacted>"}


def test_cli_invalid_spec_exits_2_naming_field(tmp_path):
    path = tmp_path / "job.yaml"
    out = tmp_path / "out"
    path.write_text(f"input: {{shards: a.tar}}\ntokenizer: {{name: x}}\noutput: {{uri: {out}}}\nclips: {{fps: fast}}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "run", str(path)], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert proc.returncode == 2, proc.stderr
    assert "clips.fps" in proc.stderr
    assert not out.exists()


def test_messages_say_what_was_expected(tmp_path):
    """An unknown key lists the allowed ones; a union names every alternative and the value given."""
    with pytest.raises(SpecError, match=r"^clips.bogus: unknown key \(allowed: num_frames, fps, "):
        parse_job_spec(_spec(clips={"bogus": 1}), str(tmp_path))
    with pytest.raises(SpecError, match="^resources.num_actors: should be 'auto' or a valid integer, got str 'many'$"):
        parse_job_spec(_spec(resources={"num_actors": "many"}), str(tmp_path))


def test_integers_fill_float_fields_as_floats(tmp_path):
    spec = parse_job_spec(_spec(clips={"fps": 8}, resources={"gpus_per_actor": 1}), str(tmp_path))
    assert isinstance(spec.clips.fps, float) and isinstance(spec.resources.gpus_per_actor, float)


def test_nested_checks_are_named_from_where_the_section_sits():
    """validate(path) of a section loaded on its own (job.json's clips) names the field under the prefix."""
    with pytest.raises(SpecError, match=r"^clips.num_frames: must be >= 1 or all$"):
        from_dict(ClipSpec, {"num_frames": 0}, "clips")
    with pytest.raises(SpecError, match=r"^steps: must be >= 1$"):
        from_dict(TrainConfig, {"data": {"shards": "a"}, "model": {"name": "x"}, "output_dir": "o", "steps": 0})


def test_fingerprint_and_job_json_are_pinned():
    """The digest and the redacted spec of a fixed spec: a change to either is deliberate. (It was
    unchanged by the pydantic models; token/error schema version 2, adding `source_member`,
    changed the digest, so outputs written before it are refused on resume, as they should be;
    so did the `shard_ids` component, for outputs named under URL-hashed shard ids.)"""
    data = {"input": {"shards": "a-{000000..000003}.tar", "storage_options": {"key": "K"}},
            "tokenizer": {"name": "DV4x8x8-mill", "dtype": "bfloat16"}, "output": {"uri": "/tmp/out"},
            # the decoder named: the digest pinned is decord's (the default is now pyav)
            "clips": {"num_frames": 9, "fps": 8, "stride": 4, "resolution": [128, 64], "decoder": "decord"}}
    spec = parse_job_spec(data, "/tmp")
    fingerprint = job_fingerprint(spec, {"vocab_size": 64000, "channels": 8}, "ab" * 32)
    assert fingerprint["digest"] == "c80abc81f3bd2d1e1dc943ca2ffd579e6dbd864ab610f6d49a1e390a0bb976ca"
    written = spec.redacted()
    assert json.loads(json.dumps(written)) == written  # plain JSON: lists, not tuples
    assert written["clips"] == {"num_frames": 9, "fps": 8.0, "stride": 4, "max_clips_per_video": None,
                                "resolution": [128, 64], "decoder": "decord", "decoder_threads": 1,
                                # added later: job.json gains keys, the digest does not
                                "split_scenes": False, "scene_threshold": 27.0, "min_motion": None,
                                "max_frames": None, "chunk_frames": 32}
    assert list(written) == ["input", "tokenizer", "output", "name", "clips", "resources", "retries", "limits", "quality"]


def test_json_schema_accepts_the_examples_and_rejects_an_unknown_key():
    schema = json_schema(JobSpec, "tokenmill job spec")
    demo = yaml.safe_load((REPO / "examples" / "demo.yaml").read_text())
    jsonschema.Draft202012Validator(schema).validate(demo)
    with pytest.raises(jsonschema.ValidationError, match="bogus"):
        jsonschema.validate({**demo, "clips": {**demo["clips"], "bogus": 1}}, schema)
    training = json_schema(TrainConfig, "tokenmill training config")
    for name in ("train_bundled.yaml", "train_bundled_finetune.yaml"):
        load_train_config(str(REPO / "examples" / name))
        jsonschema.validate(yaml.safe_load((REPO / "examples" / name).read_text()), training)


def test_cli_prints_the_spec_schema():
    proc = subprocess.run([sys.executable, "-m", "jobs.cli", "spec-schema"], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    schema = json.loads(proc.stdout)
    assert schema["required"] == ["input", "tokenizer", "output"] and schema["additionalProperties"] is False
