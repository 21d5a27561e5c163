"""TokenDataset over a real S3 endpoint (moto server): same items, same order as on local disk."""

from __future__ import annotations

import torch

from pipeline.loader import TokenDataset, TokenLoader
from tests.loader_support import write_output


def upload_tree(s3_server, local_root, url: str) -> None:
    for path in sorted(p for p in local_root.rglob("*") if p.is_file()):
        s3_server.upload(path, f"{url}/{path.relative_to(local_root).as_posix()}")


def test_s3_output_reads_like_the_local_copy(tmp_path, s3_server, s3_bucket):
    """A job output copied to S3 yields the same clips in the same order with the same ids."""
    write_output(tmp_path, [4, 3])
    url = f"s3://{s3_bucket}/jobs/demo"
    upload_tree(s3_server, tmp_path, url)
    local = list(TokenDataset(str(tmp_path), seed=4, shuffle_buffer=3))
    remote = list(TokenDataset(url, seed=4, shuffle_buffer=3, storage_options=s3_server.storage_options))
    assert [it["key"] for it in remote] == [it["key"] for it in local]
    assert all(torch.equal(a["tokens"], b["tokens"]) for a, b in zip(remote, local, strict=True))


def test_s3_with_dataloader_workers(tmp_path, s3_server, s3_bucket):
    """Worker processes open their own S3 connections and together read every clip once."""
    keys = write_output(tmp_path, [4, 3])
    url = f"s3://{s3_bucket}/out"
    upload_tree(s3_server, tmp_path, url)
    ds = TokenDataset(url, seed=1, storage_options=s3_server.storage_options)
    got = [it["key"] for batch in TokenLoader(ds, batch_size=2, num_workers=2, collate_fn=list) for it in batch]
    assert sorted(got) == sorted(keys) and len(got) == 7
