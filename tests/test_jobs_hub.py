"""Jobs whose tokenizer is a Hub repo id, run by the CLI against a stand-in Hub on 127.0.0.1."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.hub import StandInHub, hub_env
from tests.jobs_helpers import REPO, SMALL, read_tokens, run_args
from tests.tokenizer_support import official_files

GATED = "acme/tiny-DV4x8x8"
TOKEN = "hf_standin_secret_4f1c"


def _run(hub: StandInHub, home: Path, out: Path, *sets: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(run_args(out, *SMALL, *sets), cwd=REPO, env=hub_env(hub, home, **env),
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def hub() -> Iterator[StandInHub]:
    served = StandInHub(token=TOKEN).start()
    try:
        yield served
    finally:
        served.stop()


@pytest.fixture(scope="module")
def first_run(hub: StandInHub, tmp_path_factory) -> Iterator[dict[str, Any]]:
    """A gated repo, HF_TOKEN set, two tokenizer actors on one node sharing one cache; Ray's own
    files under a temporary folder of their own, so they can be searched for the token."""
    root = tmp_path_factory.mktemp("hubjob")
    files = official_files("DV4x8x8-tiny", root / "official")
    sha = hub.publish(GATED, {**files, "README.md": b"# tiny"}, gated=True)
    ray_tmp = Path(tempfile.mkdtemp(prefix="rh", dir="/tmp"))  # short: Ray's socket paths have a limit
    out, home = root / "out", root / "hf"
    proc = _run(hub, home, out, "tokenizer.name=DV4x8x8", f"tokenizer.checkpoint={GATED}",
                "resources.num_actors=2", HF_TOKEN=TOKEN, RAY_TMPDIR=str(ray_tmp))
    try:
        yield {"proc": proc, "out": out, "home": home, "sha": sha, "files": files, "ray_tmp": ray_tmp}
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _job(out: Path) -> dict[str, Any]:
    return json.loads((out / "job.json").read_text())


def test_two_actors_fetch_the_repo_once_and_the_revision_is_recorded(hub: StandInHub, first_run) -> None:
    """The driver and both actors load the weights, each file crosses the network once, and
    job.json records the commit the repo resolved to."""
    proc, out = first_run["proc"], first_run["out"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert read_tokens(out)
    stats = json.loads((out / "summary.json").read_text())["actors"]
    assert len(stats) == 2
    assert hub.downloads() == {f"{GATED}/encoder.jit": 1, f"{GATED}/decoder.jit": 1, f"{GATED}/config.json": 1}
    fingerprint = _job(out)["fingerprint"]
    assert fingerprint["tokenizer.revision"] == f"{GATED}@{first_run['sha']}"
    assert _job(out)["spec"]["tokenizer"]["checkpoint"] == GATED  # what the user wrote


def test_the_token_reaches_no_output_and_no_log(first_run) -> None:
    """HF_TOKEN is in no file of the output, the job's stdout/stderr, or Ray's session logs."""
    proc = first_run["proc"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert TOKEN not in proc.stdout and TOKEN not in proc.stderr
    searched = 0
    for folder in (first_run["out"], first_run["ray_tmp"]):
        for path in folder.rglob("*"):
            if path.is_file() and not path.is_symlink():
                searched += 1
                assert TOKEN.encode() not in path.read_bytes(), path
    assert searched > 20 and any(first_run["ray_tmp"].rglob("*.log"))


def test_resume_after_the_repo_moved_is_refused_unless_pinned(hub: StandInHub, first_run) -> None:
    """The repo gets a new commit: an unpinned resume exits 2 naming tokenizer.revision and both
    commits, writing nothing; pinned to the old commit it resumes offline from the cache with no
    request; pinned to the new commit (same weights) it is accepted and recorded, and preview
    then decodes with that recorded commit."""
    assert first_run["proc"].returncode == 0, first_run["proc"].stderr[-3000:]
    out, home, old = first_run["out"], first_run["home"], first_run["sha"]
    job_before = (out / "job.json").read_bytes()
    new = hub.publish(GATED, {**first_run["files"], "README.md": b"# tiny, now with a longer card"}, gated=True)

    refused = _run(hub, home, out, "tokenizer.name=DV4x8x8", f"tokenizer.checkpoint={GATED}", HF_TOKEN=TOKEN)
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert "tokenizer.revision" in refused.stderr and old in refused.stderr and new in refused.stderr
    assert "Traceback" not in refused.stderr
    assert (out / "job.json").read_bytes() == job_before

    requests = len(hub.requests())
    offline = _run(hub, home, out, "tokenizer.name=DV4x8x8", f"tokenizer.checkpoint={GATED}@{old}",
                   HF_HUB_OFFLINE="1")
    assert offline.returncode == 0, offline.stderr[-3000:]
    assert "nothing to do" in offline.stderr
    assert len(hub.requests()) == requests

    accepted = _run(hub, home, out, "tokenizer.name=DV4x8x8", f"tokenizer.checkpoint={GATED}@{new}", HF_TOKEN=TOKEN)
    assert accepted.returncode == 0, accepted.stderr[-3000:]
    assert "nothing to do" in accepted.stderr  # same weights: every shard's record still holds
    assert _job(out)["fingerprint"]["tokenizer.revision"] == f"{GATED}@{new}"

    key = sorted(read_tokens(out))[0]
    preview = subprocess.run([sys.executable, "-m", "jobs.cli", "preview", str(out), "--key", key, "--out",
                              str(out.parent / "preview")], cwd=REPO, capture_output=True, text=True, timeout=300,
                             env=hub_env(hub, home, HF_HUB_OFFLINE="1"))  # the recorded commit, from the cache
    assert preview.returncode == 0, preview.stderr[-3000:]
    assert (out.parent / "preview" / f"{key}-compare.png").is_file()


@pytest.mark.parametrize(("repo", "files", "gated", "message"), [
    ("acme/missing", None, False, "no repository acme/missing"),
    ("acme/text-model", {"README.md": b"#", "model.safetensors": b"0"}, False, "holds no tokenizer files"),
    ("acme/gated-DV4x8x8", {"encoder.jit": b"0", "decoder.jit": b"0"}, True, "is gated"),
])
def test_unservable_repo_is_a_spec_error(hub: StandInHub, tmp_path: Path, repo: str, files: dict | None,
                                         gated: bool, message: str) -> None:
    """A missing repo, one without tokenizer files, or a gated one without HF_TOKEN: exit 2, one
    line naming the field and the reason, no traceback, nothing written."""
    if files is not None:
        hub.publish(repo, files, gated=gated)
    out = tmp_path / "out"
    proc = _run(hub, tmp_path / "hf", out, f"tokenizer.name={repo}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "tokenizer.name: cannot load tokenizer: " in proc.stderr and message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()
