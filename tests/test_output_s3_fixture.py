"""The moto S3 fixture is a real server process reachable through fsspec/s3fs."""

from __future__ import annotations

import fsspec


def test_s3_server_round_trips_an_object_through_fsspec(s3_server, s3_bucket):
    """Bytes written through fsspec with the fixture's storage options come back unchanged."""
    url = f"s3://{s3_bucket}/a/b.bin"
    with fsspec.open(url, "wb", **s3_server.storage_options) as f:
        f.write(b"hello tokens")
    assert s3_server.filesystem().cat(url) == b"hello tokens"
    assert s3_server.process.poll() is None  # a live separate process, not an in-process mock


def test_each_bucket_fixture_is_fresh_and_empty(s3_server, s3_bucket):
    """Every test gets its own empty bucket."""
    assert s3_server.filesystem().ls(s3_bucket) == []
