"""Atomic publication: a killed writer leaves nothing visible, racing attempts leave one result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from pipeline.records import ShardStats, shard_id
from pipeline.writers import storage
from pipeline.writers.commit import ShardWriter
from pipeline.writers.manifest import plan_shards, prepare_output, read_manifest
from tests.output_support import clip_ids, clip_info, fingerprint_for, make_spec, write_shard

REPO = Path(__file__).resolve().parents[1]
URL = "/data/in-000001.tar"

_SLOW_WRITER = textwrap.dedent("""
    import json, sys, time
    from pipeline.writers.commit import ShardWriter
    from pipeline.records import ShardStats, shard_id
    from tests.output_support import clip_ids, clip_info
    out, url, opts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    w = ShardWriter(out, shard_id(url), url, storage_options=opts)
    for s in range(100000):
        w.add(clip_info(url, s, 0), clip_ids(url, s, 0), "DV4x8x8-tiny")
        if s == 600:  # two row groups are on disk in the temporary file by now
            print("writing", flush=True)
        time.sleep(0.001 if s < 600 else 0.05)
    w.commit(ShardStats())
""")


def _visible_files(out: Path) -> list[str]:
    """Files a reader would see: everything outside '_'-prefixed temporaries."""
    seen = []
    for dirpath, dirnames, filenames in os.walk(out):
        dirnames[:] = [d for d in dirnames if not d.startswith("_") or d == "_manifest"]
        seen += [os.path.relpath(os.path.join(dirpath, f), out) for f in filenames if not f.startswith((".", "_"))]
    return sorted(seen)


def test_writer_killed_mid_file_leaves_no_output_and_rerun_completes(tmp_path):
    """SIGKILL while the token file is half written: no visible file, no record; the rerun is whole."""
    out = tmp_path / "out"
    spec = make_spec(str(out))
    fp = fingerprint_for(spec)
    prepare_output(spec, fp, shards_total=1)
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, str(out), URL, "{}"], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
    temps = list((out / "tokens" / "_tmp").iterdir())
    assert temps and temps[0].stat().st_size > 0  # it really was mid-file
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)

    assert _visible_files(out) == ["job.json"]
    assert read_manifest(str(out)) == {}
    assert plan_shards([URL], str(out))[0] == [URL]

    prepare_output(spec, fp, shards_total=1)  # the next run cleans the dead attempt's temporaries
    assert not (out / "tokens" / "_tmp").exists()
    record = write_shard(str(out), URL, fp, samples=4, attempt=2)
    assert plan_shards([URL], str(out)) == ([], {shard_id(URL): record})
    assert pq.read_table(out / record.outputs["tokens"].path).num_rows == 8
    assert _visible_files(out) == sorted(["job.json", record.outputs["tokens"].path,
                                          record.outputs["errors"].path, f"_manifest/{shard_id(URL)}.json"])


def test_abort_removes_temporaries_and_publishes_nothing(tmp_path):
    out = tmp_path / "out"
    w = ShardWriter(str(out), shard_id(URL), URL)
    w.add(clip_info(URL, 0, 0), clip_ids(URL, 0, 0), "tok")
    w.abort()
    assert _visible_files(out) == [] and not list((out / "tokens" / "_tmp").iterdir())


def test_unrecorded_published_file_is_removed_at_next_start(tmp_path):
    """A file published by an attempt that died before its record is invisible to plain readers next run."""
    out = tmp_path / "out"
    spec = make_spec(str(out))
    fp = fingerprint_for(spec)
    prepare_output(spec, fp, shards_total=1)
    orphan = out / "tokens" / f"{shard_id(URL)}.0123456789.parquet"
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"PAR1 half of a dead attempt")
    (out / "tokens" / "_tmp" / "x.123.parquet").parent.mkdir(parents=True, exist_ok=True)
    (out / "tokens" / "_tmp" / "x.123.parquet").write_bytes(b"temp")
    prepare_output(spec, fp, shards_total=1)
    assert not orphan.exists() and not (out / "tokens" / "_tmp").exists()


def test_second_attempt_after_a_record_discards_itself(tmp_path):
    """First record wins: a straggler finishing later neither overwrites files nor the record."""
    out = tmp_path / "out"
    fp = fingerprint_for(make_spec(str(out)))
    first = write_shard(str(out), URL, fp, samples=2, attempt=1)
    before = (out / first.outputs["tokens"].path).read_bytes()
    second = write_shard(str(out), URL, fp, samples=3, attempt=2)  # different content
    assert second == first
    assert (out / first.outputs["tokens"].path).read_bytes() == before
    assert read_manifest(str(out))[shard_id(URL)].attempt == 1


def _filled_writer(out: Path, attempt: int, samples: int) -> tuple[ShardWriter, Any]:
    w = ShardWriter(str(out), shard_id(URL), URL, attempt=attempt)
    for s in range(samples):
        w.add(clip_info(URL, s, 0), clip_ids(URL, s, 0), "tok")
    return w, w._finish_files(ShardStats(samples_total=samples, samples_ok=samples))


def test_interleaved_attempts_publish_under_their_own_names_and_the_record_decides(tmp_path):
    """Both attempts publish before either records: the first record stands with its own bytes;
    the loser removes only its own files, and the folders hold exactly the recorded files."""
    out = tmp_path / "out"
    (a, rec_a), (b, rec_b) = _filled_writer(out, 1, 2), _filled_writer(out, 2, 3)
    a._publish()
    b._publish()
    assert a.token_rel != b.token_rel and (out / a.token_rel).exists() and (out / b.token_rel).exists()
    assert a._create_record(rec_a) == rec_a
    assert b._create_record(rec_b) == rec_a  # b lost: it gets the winner's record back
    a._cleanup()
    b._cleanup()
    on_disk = read_manifest(str(out))[shard_id(URL)]
    assert on_disk.attempt_id == a.attempt_id
    for role, f in on_disk.outputs.items():
        assert storage.file_checksum(str(out / f.path)) == f.checksum, role
    assert _visible_files(out) == sorted([rec_a.outputs["tokens"].path, rec_a.outputs["errors"].path,
                                          f"_manifest/{shard_id(URL)}.json"])
    assert plan_shards([URL], str(out))[0] == []


def test_loser_interrupted_after_publishing_removes_only_its_own_files(tmp_path, monkeypatch):
    """An attempt cancelled between publishing and creating its record (Ray's cancel raises
    KeyboardInterrupt in the task) leaves the winner's record and bytes exactly as they were."""
    out = tmp_path / "out"
    fp = fingerprint_for(make_spec(str(out)))
    winner = write_shard(str(out), URL, fp, samples=2)
    before = {role: (out / f.path).read_bytes() for role, f in winner.outputs.items()}
    loser, _ = _filled_writer(out, 2, 3)
    monkeypatch.setattr(loser, "_read_record", lambda: None)  # it checked before the winner recorded
    real_put = storage.put_bytes

    def interrupted(fs, path, data, exclusive=False):
        if path.endswith(f"{shard_id(URL)}.json"):
            raise KeyboardInterrupt  # the cancel lands right before the record's create
        return real_put(fs, path, data, exclusive)

    monkeypatch.setattr(storage, "put_bytes", interrupted)
    with pytest.raises(KeyboardInterrupt):
        loser.commit(ShardStats(samples_total=3, samples_ok=3))
    monkeypatch.undo()
    assert read_manifest(str(out))[shard_id(URL)] == winner
    assert {role: (out / f.path).read_bytes() for role, f in winner.outputs.items()} == before
    assert not (out / loser.token_rel).exists() and not (out / loser.error_rel).exists()
    assert not list((out / "tokens" / "_tmp").iterdir())


def test_record_creation_is_exclusive_on_s3(s3_server, s3_bucket):
    """On S3 the record is created with If-None-Match: a second create of the same name fails."""
    fs, root = storage.get_fs(f"s3://{s3_bucket}/out", s3_server.storage_options)
    path = storage.join(root, "_manifest", "a.json")
    assert storage.put_bytes(fs, path, b"first", exclusive=True)
    assert not storage.put_bytes(fs, path, b"second", exclusive=True)
    assert storage.read_bytes(fs, path) == b"first"


def test_straggler_on_s3_does_not_replace_the_recorded_shard(s3_server, s3_bucket):
    """A later attempt writing to S3 returns the standing record and leaves its files alone."""
    out, opts = f"s3://{s3_bucket}/out", s3_server.storage_options
    fp = fingerprint_for(make_spec(out, opts))
    first = write_shard(out, URL, fp, samples=2, storage_options=opts)
    assert write_shard(out, URL, fp, samples=3, storage_options=opts, attempt=2) == first
    fs = s3_server.filesystem()
    assert fs.size(f"{s3_bucket}/out/{first.outputs['tokens'].path}") == first.outputs["tokens"].size
    assert fs.ls(f"{s3_bucket}/out/tokens") == [f"{s3_bucket}/out/{first.outputs['tokens'].path}"]


def test_writer_killed_mid_file_on_s3_leaves_nothing_and_rerun_completes(s3_server, s3_bucket):
    """The same kill against the S3 endpoint: no object under tokens/ or _manifest/ until a rerun."""
    out, opts = f"s3://{s3_bucket}/out", s3_server.storage_options
    spec = make_spec(out, opts)
    fp = fingerprint_for(spec)
    prepare_output(spec, fp, shards_total=1)
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, out, URL, json.dumps(opts)], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    fs = s3_server.filesystem()
    assert fs.find(f"{s3_bucket}/out") == [f"{s3_bucket}/out/job.json"]
    assert plan_shards([URL], out, opts)[0] == [URL]
    record = write_shard(out, URL, fp, samples=4, storage_options=opts, attempt=2)
    assert plan_shards([URL], out, opts) == ([], {shard_id(URL): record})
    assert fs.size(f"{s3_bucket}/out/{record.outputs['tokens'].path}") == record.outputs["tokens"].size


def test_a_record_create_whose_answer_was_lost_keeps_the_attempts_files(tmp_path, monkeypatch):
    """The create landed but the client saw a failure and its retry was refused (412): the
    attempt reads the record back, finds its own id, and keeps its files."""
    out = tmp_path / "out"
    w = ShardWriter(str(out), shard_id(URL), URL)
    for s in range(2):
        w.add(clip_info(URL, s, 0), clip_ids(URL, s, 0), "tok")
    real_put = storage.put_bytes

    def landed_but_refused(fs, path, data, exclusive=False):
        done = real_put(fs, path, data, exclusive)
        return done and not path.endswith(f"{shard_id(URL)}.json")

    monkeypatch.setattr(storage, "put_bytes", landed_but_refused)
    record = w.commit(ShardStats(samples_total=2, samples_ok=2))
    monkeypatch.undo()
    assert record.attempt_id == w.attempt_id == read_manifest(str(out))[shard_id(URL)].attempt_id
    assert plan_shards([URL], str(out))[0] == []  # its files are there, at the recorded sizes
