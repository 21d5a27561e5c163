"""One real job over hostile input read from S3 with credentials: it exits cleanly, accounts for
every sample, writes only its output, and never writes the credentials anywhere."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import uuid
from pathlib import Path

import pytest
import yaml

from tests.fixtures.fuzz import tar_bytes
from tests.jobs_helpers import DEMO, REPO, SMALL, cli_env, read_summary
from tests.test_data_fuzz import INPUTS, fuzz_corpus

SECRET_KEY = f"AKIA{uuid.uuid4().hex[:16].upper()}"
SECRET = f"tm-secret-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def fuzzed_job(s3_server, tmp_path_factory):
    """Runs `tokenmill run` once: the mutated shard on S3 (key and secret in input and output
    storage_options), webdataset output on local disk, every video spooled to a temp file."""
    server = dataclasses.replace(s3_server, key=SECRET_KEY, secret=SECRET)  # moto takes any credentials
    sandbox = tmp_path_factory.mktemp("untrusted")
    (sandbox / "tmp").mkdir()
    local = sandbox / "fuzz-000000.tar"
    local.write_bytes(tar_bytes(fuzz_corpus()[0]))
    url = server.upload(local, f"s3://{server.make_bucket()}/in/fuzz-000000.tar")
    local.unlink()
    spec = yaml.safe_load(DEMO.read_text())
    spec["input"] = {"shards": url, "storage_options": server.storage_options}
    spec["output"] = {"uri": str(sandbox / "out"), "format": "webdataset",
                      "storage_options": {"key": SECRET_KEY, "secret": SECRET}}
    spec["limits"] = {"spool_mb": 0.001, "decode_timeout_s": 60}
    job = sandbox / "job.yaml"
    job.write_text(yaml.safe_dump(spec))
    ray_tmp = tempfile.mkdtemp(prefix="tm-ray-")  # short: Ray's socket paths must fit 107 bytes
    args = [sys.executable, "-m", "jobs.cli", "run", str(job), "--no-progress"]
    for s in SMALL:
        args += ["--set", s]
    env = cli_env(TMPDIR=str(sandbox / "tmp"), RAY_TMPDIR=ray_tmp)
    try:
        proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=280)
        ray_logs = [p for p in Path(ray_tmp).rglob("*") if p.is_file() and not p.is_socket()]
        logs = proc.stdout + proc.stderr + "".join(p.read_bytes().decode("utf-8", "replace") for p in ray_logs)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    job.unlink()  # the spec file is the user's: it holds the secret by design
    return proc, sandbox, logs


@pytest.mark.timeout(300)
def test_a_fuzzed_job_exits_cleanly_accounts_every_sample_and_writes_only_its_output(fuzzed_job):
    """Exit 0, totals add up, the token tar extracts inside its folder, the temp dir is empty."""
    proc, sandbox, _ = fuzzed_job
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = sandbox / "out"
    summary = read_summary(out)
    assert summary["samples_total"] == INPUTS == summary["samples_ok"] + summary["samples_failed"]
    assert sum(summary["failures_by_reason"].values()) == summary["samples_failed"]
    assert "decode:DecoderCrashed" not in summary["failures_by_reason"]
    (token_tar,) = (out / "tokens").glob("*.tar")
    extract = sandbox / "x" / "y" / "z" / "w"
    extract.mkdir(parents=True)
    with tarfile.open(token_tar) as tar:
        names = tar.getnames()
        tar.extractall(extract, filter="data")
    assert len(names) == 2 * summary["clips_written"] and all(not n.startswith(("/", "..")) for n in names)
    written = {os.path.relpath(os.path.join(d, f), sandbox) for d, _, files in os.walk(sandbox) for f in files}
    assert {w for w in written if not w.startswith(("out/", "x/y/z/w/"))} == set()
    keys = [json.loads((extract / n).read_text())["key"] for n in names if n.endswith(".json")]
    assert len(set(keys)) == len(keys)


@pytest.mark.timeout(300)
def test_storage_credentials_appear_in_no_output_file_and_no_log(fuzzed_job):
    """job.json keeps only the option names; no file under the output, no line the CLI printed
    and no Ray session log holds the key id or the secret."""
    proc, sandbox, logs = fuzzed_job
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = [p for p in (sandbox / "out").rglob("*") if p.is_file()]
    assert len(files) >= 5 and len(logs) > 1000
    for path in files:
        data = path.read_bytes()
        assert SECRET.encode() not in data and SECRET_KEY.encode() not in data, path
    assert SECRET not in logs and SECRET_KEY not in logs
    job = json.loads((sandbox / "out" / "job.json").read_text())
    assert job["spec"]["input"]["storage_options"]["secret"] == "<redacted>"
