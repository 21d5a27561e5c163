"""Job spec loading and validation (schemas/jobspec.py, schemas/config.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from schemas.config import SpecError
from schemas.jobspec import load_job_spec, parse_job_spec

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
        ({"output": {"format": "csv"}}, "output.format"),
        ({"resources": {"num_actors": "many"}}, "resources.num_actors"),
        ({"retries": {"max_attempts": True}}, "retries.max_attempts"),
        ({"extra_section": {}}, "extra_section"),
    ],
)
def test_bad_field_is_named(sections, field, tmp_path):
    with pytest.raises(SpecError) as info:
        parse_job_spec(_spec(**sections), base_dir=str(tmp_path))
    assert info.value.field == field
    assert str(info.value).startswith(field)


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
