"""Shards on a real S3 endpoint (moto server): listing, streaming, and infrastructure errors."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest

from pipeline.readers.sources import expand_shards
from pipeline.readers.stages import iter_shard
from pipeline.records import Clip, ShardStats
from schemas.jobspec import ClipSpec
from tests.fixtures.media import encode_video, write_tar
from tests.fixtures.net import free_port
from tests.fixtures.s3 import S3Server, _moto_server_command, _wait_until_up

SPEC = ClipSpec(num_frames=9, resolution=(32, 32))


def _clips(url, storage_options):
    stats = ShardStats()
    out = list(iter_shard(url, SPEC, storage_options, stats, isolate=False))
    return [x for x in out if isinstance(x, Clip)], stats


def test_s3_glob_and_range_expand_and_stream_the_same_clips_as_local(s3_server, s3_bucket, sample_shards):
    for path in sample_shards[:2]:
        s3_server.upload(path, f"s3://{s3_bucket}/data/{path.name}")
    opts = s3_server.storage_options
    urls = expand_shards(f"s3://{s3_bucket}/data/*.tar", opts)
    assert urls == [f"s3://{s3_bucket}/data/{p.name}" for p in sample_shards[:2]]
    assert expand_shards(f"s3://{s3_bucket}/data/shards-{{000000..000001}}.tar", opts) == urls
    remote, stats = _clips(urls[1], opts)
    local, _ = _clips(str(sample_shards[1]), None)
    assert [c.sample_key for c in remote] == [c.sample_key for c in local] and len(remote) > 0
    assert all(np.array_equal(a.frames, b.frames) for a, b in zip(remote, local, strict=True))
    assert stats.samples_ok == 2 and stats.seconds["read"] > 0


def test_a_missing_s3_object_raises_for_the_caller_to_retry(s3_server, s3_bucket):
    with pytest.raises(FileNotFoundError):
        _clips(f"s3://{s3_bucket}/nope.tar", s3_server.storage_options)


@pytest.fixture
def private_s3(tmp_path):
    """A moto server of this test's own, so that it can be killed mid-read."""
    port = free_port()
    proc = subprocess.Popen(_moto_server_command(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(endpoint, proc)
        yield S3Server(endpoint_url=endpoint, process=proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_an_endpoint_dying_mid_shard_raises_and_is_not_counted_as_bad_data(private_s3, tmp_path):
    # first sample: a real video; then 20 MiB, beyond what the first reads fetch ahead (8 MiB)
    shard = write_tar(tmp_path / "big.tar", [("a.mp4", encode_video(64, 48, 9)), ("b.json", b"{}"),
                                             ("c.bin", os.urandom(20 * 1024 * 1024)), ("d.mp4", b"")])
    bucket = private_s3.make_bucket()
    url = private_s3.upload(shard, f"s3://{bucket}/big.tar")
    opts = {**private_s3.storage_options, "skip_instance_cache": True,
            "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 1, "read_timeout": 2}}
    stats = ShardStats()
    items = iter_shard(url, SPEC, opts, stats, isolate=False)
    first = next(items)
    assert isinstance(first, Clip) and first.sample_key == "a"
    private_s3.process.kill()
    private_s3.process.wait()
    with pytest.raises(OSError, match="big.tar"):  # botocore's error, wrapped as ShardReadError
        list(items)
    # b (a lone sidecar, read whole before c's data was asked for) is genuinely bad data; the
    # dying endpoint itself is no dead letter and no shard error
    assert stats.shard_error is None and dict(stats.failures) == {"read:NoVideoMember": 1}
    assert stats.samples_ok == 1
