"""Resume and fingerprint: finished shards are skipped, damaged ones redone, mixed jobs refused."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from pipeline.records import shard_id
from pipeline.writers.fingerprint import job_fingerprint
from pipeline.writers.manifest import (
    compact_manifest,
    plan_output,
    plan_shards,
    prepare_output,
    read_job_file,
    read_manifest,
    supersede,
)
from schemas.config import SpecError
from tests.output_support import fingerprint_for, make_spec, write_shard

URLS = [f"/data/in-{i:06d}.tar" for i in range(4)]


def test_rerun_with_a_token_changing_field_is_refused_naming_it(tmp_path):
    """A different clips.num_frames (or weights) is a SpecError naming the field; nothing rewritten."""
    spec = make_spec(str(tmp_path / "out"))
    prepare_output(spec, fingerprint_for(spec), shards_total=4)
    before = (tmp_path / "out" / "job.json").read_bytes()
    changed = make_spec(str(tmp_path / "out"), **{"clips.num_frames": 17})
    with pytest.raises(SpecError) as err:
        prepare_output(changed, fingerprint_for(changed), shards_total=4)
    assert err.value.field == "clips.num_frames" and "9 -> 17" in str(err.value)
    with pytest.raises(SpecError, match="tokenizer.weights_hash"):
        prepare_output(spec, fingerprint_for(spec, weights_hash="other"), shards_total=4)
    assert (tmp_path / "out" / "job.json").read_bytes() == before


def test_rerun_may_change_fields_that_do_not_change_tokens(tmp_path):
    """Resources, retries, batch size and name may change; job.json is updated, secrets redacted."""
    spec = make_spec(str(tmp_path / "out"))
    prepare_output(spec, fingerprint_for(spec), shards_total=4)
    other = make_spec(str(tmp_path / "out"), {"key": "SECRET-KEY"}, **{
        "resources.num_actors": 3, "retries.max_attempts": 5, "tokenizer.batch_size": 16, "name": "again"})
    assert fingerprint_for(other) == fingerprint_for(spec)
    prepare_output(other, fingerprint_for(other), shards_total=4)
    job = read_job_file(str(tmp_path / "out"))
    assert job is not None and job.spec["resources"]["num_actors"] == 3
    assert "SECRET-KEY" not in (tmp_path / "out" / "job.json").read_text()


def test_hub_revision_is_compared_on_resume_but_not_hashed(tmp_path):
    """tokenizer.revision refuses an unpinned resume after the repo moved, naming both commits;
    the spec pinning the new commit is accepted; the digest (manifest records) ignores it."""
    old, new = "a" * 40, "b" * 40
    spec = make_spec(str(tmp_path / "out"), **{"tokenizer.name": "acme/tiny-DV4x8x8"})
    first = job_fingerprint(spec, {}, "w0", revision=f"acme/tiny-DV4x8x8@{old}")
    moved = job_fingerprint(spec, {}, "w0", revision=f"acme/tiny-DV4x8x8@{new}")
    assert first["digest"] == moved["digest"] == job_fingerprint(spec, {}, "w0")["digest"]
    prepare_output(spec, first, shards_total=4)
    with pytest.raises(SpecError) as err:
        prepare_output(spec, moved, shards_total=4)
    assert err.value.field == "tokenizer.revision" and old in str(err.value) and new in str(err.value)
    assert f"pin acme/tiny-DV4x8x8@{new} to accept" in str(err.value)
    pinned = make_spec(str(tmp_path / "out"), **{"tokenizer.name": f"acme/tiny-DV4x8x8@{new}"})
    assert job_fingerprint(pinned, {}, "w0", revision=f"acme/tiny-DV4x8x8@{new}") == moved
    prepare_output(pinned, moved, shards_total=4)
    job = read_job_file(str(tmp_path / "out"))
    assert job is not None and job.fingerprint["tokenizer.revision"].endswith(new)
    other_weights = job_fingerprint(pinned, {}, "w1", revision=f"acme/tiny-DV4x8x8@{new}")
    with pytest.raises(SpecError, match="tokenizer.weights_hash"):
        prepare_output(pinned, other_weights, shards_total=4)


def _partial_then_resume(out: str, opts=None) -> tuple[list[str], dict]:
    spec = make_spec(out, opts)
    fp = fingerprint_for(spec)
    prepare_output(spec, fp, shards_total=len(URLS))
    first = {u: write_shard(out, u, fp, storage_options=opts) for u in URLS[:2]}
    todo, done = plan_shards(URLS, out, opts, fingerprint=fp["digest"])
    assert todo == URLS[2:] and set(done) == {shard_id(u) for u in URLS[:2]}
    assert done == {shard_id(u): r for u, r in first.items()}
    for u in todo:
        write_shard(out, u, fp, storage_options=opts)
    return plan_shards(URLS, out, opts, fingerprint=fp["digest"])


def test_resume_after_partial_output_on_local_disk(tmp_path):
    """Half the shards done: the plan redoes only the rest and the output ends complete, no duplicates."""
    out = str(tmp_path / "out")
    todo, done = _partial_then_resume(out)
    assert todo == [] and len(done) == 4
    keys = pads.dataset(Path(out) / "tokens", format="parquet").to_table(columns=["key"])["key"].to_pylist()
    assert len(keys) == len(set(keys)) == 4 * 6


def test_resume_after_partial_output_on_s3(s3_server, s3_bucket):
    """The same resume against the real S3 endpoint, through storage options only."""
    out = f"s3://{s3_bucket}/job/out"
    todo, done = _partial_then_resume(out, s3_server.storage_options)
    assert todo == [] and len(done) == 4
    fs = s3_server.filesystem()
    names = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"{s3_bucket}/job/out/tokens"))
    assert names == sorted(r.outputs["tokens"].path.rsplit("/", 1)[-1] for r in done.values())
    assert all(n.startswith(shard_id(u)) for n, u in zip(names, sorted(URLS, key=shard_id), strict=True))
    dataset = pads.dataset(f"{s3_bucket}/job/out/tokens", filesystem=fs, format="parquet")
    assert dataset.count_rows() == 4 * 6


def test_damaged_or_missing_outputs_are_redone(tmp_path):
    """A record whose file is gone, or has another size, does not count as done."""
    out = tmp_path / "out"
    spec = make_spec(str(out))
    fp = fingerprint_for(spec)
    records = {u: write_shard(str(out), u, fp) for u in URLS[:3]}
    (out / records[URLS[0]].outputs["tokens"].path).unlink()
    with open(out / records[URLS[1]].outputs["errors"].path, "ab") as f:
        f.write(b"junk")
    todo, done = plan_shards(URLS, str(out))
    assert todo == [URLS[0], URLS[1], URLS[3]] and list(done) == [shard_id(URLS[2])]


def test_records_of_another_fingerprint_are_not_done(tmp_path):
    out = str(tmp_path / "out")
    spec = make_spec(out)
    write_shard(out, URLS[0], fingerprint_for(spec, weights_hash="old"))
    assert plan_shards(URLS[:1], out, fingerprint=fingerprint_for(spec)["digest"])[0] == URLS[:1]


def test_manifest_index_is_a_cache_the_listing_overrules(tmp_path):
    """After compaction, reads use the index; new records are seen, deleted ones are dropped."""
    out = tmp_path / "out"
    fp = fingerprint_for(make_spec(str(out)))
    for u in URLS[:3]:
        write_shard(str(out), u, fp)
    assert compact_manifest(str(out)) == 3
    assert (out / "_manifest" / "_index.jsonl.gz").exists()
    (out / "_manifest" / f"{shard_id(URLS[0])}.json").unlink()  # an operator forces a redo
    write_shard(str(out), URLS[3], fp)
    assert set(read_manifest(str(out))) == {shard_id(u) for u in URLS[1:]}
    # the index's copy is trusted only while the listed record is the same object: a record
    # replaced by one of the same size (attempt 1 -> 2) is read again
    path = out / "_manifest" / f"{shard_id(URLS[1])}.json"
    data = json.loads(path.read_text())
    data["attempt"] = 2
    replacement = out / "_manifest" / "_replacement"
    replacement.write_text(json.dumps(data, sort_keys=True))
    assert replacement.stat().st_size == path.stat().st_size
    os.replace(replacement, path)
    assert read_manifest(str(out))[shard_id(URLS[1])].attempt == 2


@pytest.mark.parametrize("content", [b"", b"not gzip at all", b"\x1f\x8b\x08\x00truncated"])
def test_unreadable_manifest_index_falls_back_to_the_records(tmp_path, content):
    """The index is a cache: an older layout or a torn write must cost time, never records."""
    out = tmp_path / "out"
    fp = fingerprint_for(make_spec(str(out)))
    for u in URLS[:2]:
        write_shard(str(out), u, fp)
    assert compact_manifest(str(out)) == 2
    (out / "_manifest" / "_index.jsonl.gz").write_bytes(content)
    assert set(read_manifest(str(out))) == {shard_id(u) for u in URLS[:2]}


def test_manifest_index_on_s3_notices_a_same_size_replacement(s3_server, s3_bucket):
    """On S3 the index entry is tied to the record's ETag, not only its size."""
    out, opts = f"s3://{s3_bucket}/out", s3_server.storage_options
    fp = fingerprint_for(make_spec(out, opts))
    for u in URLS[:2]:
        write_shard(out, u, fp, storage_options=opts)
    assert compact_manifest(out, opts) == 2
    fs = s3_server.filesystem()
    path = f"{s3_bucket}/out/_manifest/{shard_id(URLS[0])}.json"
    data = json.loads(fs.cat(path))
    before = len(fs.cat(path))
    data["attempt"] = 2
    fs.pipe(path, json.dumps(data, sort_keys=True).encode())
    assert len(fs.cat(path)) == before
    assert read_manifest(out, opts)[shard_id(URLS[0])].attempt == 2


def test_new_clip_keys_enter_the_fingerprint_only_when_set(tmp_path):
    """A job that leaves the newer keys at their defaults keeps its fingerprint; each one set changes it."""
    out = str(tmp_path / "out")
    base = fingerprint_for(make_spec(out, **{"clips.decoder": "decord"}))
    assert not any(k.startswith(("clips.split", "clips.min_motion", "quality.")) for k in base)
    for key, value in (("clips.split_scenes", "true"), ("clips.min_motion", "1.0"), ("quality.sample_rate", "0.1"),
                       ("clips.resolution", "{short_side: 32}"), ("clips.num_frames", "all")):
        changed = fingerprint_for(make_spec(out, **{"clips.decoder": "decord", key: value}))
        assert changed["digest"] != base["digest"], key


def test_stale_records_are_superseded_and_the_redo_restores_the_files(tmp_path):
    """Missing file, wrong size, damaged input: each record is set aside with its files, and a
    new attempt records the shard again under its own names."""
    out = tmp_path / "out"
    fp = fingerprint_for(make_spec(str(out)))
    records = {u: write_shard(str(out), u, fp) for u in URLS}
    (out / records[URLS[0]].outputs["tokens"].path).unlink()
    with open(out / records[URLS[1]].outputs["tokens"].path, "r+b") as f:
        f.truncate(100)
    damaged = json.loads((out / "_manifest" / f"{shard_id(URLS[2])}.json").read_text())
    damaged["stats"]["shard_error"] = "TruncatedShard: stream ended"
    (out / "_manifest" / f"{shard_id(URLS[2])}.json").write_text(json.dumps(damaged, sort_keys=True))
    plan = plan_output(URLS, str(out), fingerprint=fp["digest"])
    assert plan.todo == URLS[:3] and list(plan.done) == [shard_id(URLS[3])]
    assert "missing" in plan.stale[shard_id(URLS[0])][1] and "100 bytes" in plan.stale[shard_id(URLS[1])][1]
    assert "damaged" in plan.stale[shard_id(URLS[2])][1]
    assert supersede(str(out), plan.stale) == 3
    assert set(read_manifest(str(out))) == {shard_id(URLS[3])}
    assert len(list((out / "_manifest" / "_superseded").iterdir())) == 3
    for u in URLS[:3]:
        assert not (out / records[u].outputs["errors"].path).exists()
        redo = write_shard(str(out), u, fp)
        assert redo.attempt_id != records[u].attempt_id
        assert pq.read_table(out / redo.outputs["tokens"].path).num_rows == 6
    assert plan_shards(URLS, str(out), fingerprint=fp["digest"])[0] == []


def test_a_same_size_replacement_on_s3_is_caught_by_the_listed_md5(s3_server, s3_bucket):
    """S3 lists a simple PUT's MD5 as its ETag: a token object overwritten with other bytes of
    the same size no longer stands, with no extra request per shard."""
    out, opts = f"s3://{s3_bucket}/out", s3_server.storage_options
    fp = fingerprint_for(make_spec(out, opts))
    record = write_shard(out, URLS[0], fp, storage_options=opts)
    fs = s3_server.filesystem()
    path = f"{s3_bucket}/out/{record.outputs['tokens'].path}"
    fs.pipe(path, b"\0" * record.outputs["tokens"].size)
    plan = plan_output(URLS[:1], out, opts, fingerprint=fp["digest"])
    assert plan.todo == URLS[:1] and "checksum" in plan.stale[shard_id(URLS[0])][1]
