"""TokenDataset over outputs written in the WebDataset format (token tars, streamed, split inside a tar)."""

from __future__ import annotations

import itertools

import torch

from pipeline.loader import TokenDataset, TokenLoader
from tests.loader_support import write_output

UNEVEN = [5, 7, 2]


def by_key(items) -> dict:
    return {it["key"]: it for it in items}


def test_tar_output_reads_like_the_parquet_output(tmp_path):
    """Same clips, ids, shapes, meta and source fields from a tar output as from a Parquet one."""
    write_output(tmp_path / "pq", UNEVEN)
    write_output(tmp_path / "tar", UNEVEN, fmt="webdataset")
    parquet = by_key(TokenDataset(str(tmp_path / "pq"), seed=0))
    tar = by_key(TokenDataset(str(tmp_path / "tar"), seed=0))
    assert tar.keys() == parquet.keys() and len(tar) == 14
    for key, item in tar.items():
        assert item["tokens"].dtype == torch.int64 and torch.equal(item["tokens"], parquet[key]["tokens"])
        for field in ("meta", "caption", "source_url", "sample_key", "clip_index", "num_frames", "fps", "width"):
            assert item[field] == parquet[key][field], field


def test_tar_rows_split_over_ranks_and_workers_without_overlap(tmp_path):
    """2 ranks x 2 workers over 3 tars of 5, 7 and 2 clips: every clip exactly once."""
    keys = write_output(tmp_path, UNEVEN, fmt="webdataset")
    seen = []
    for rank in range(2):
        ds = TokenDataset(str(tmp_path), rank=rank, world_size=2, seed=1, shuffle_buffer=3)
        seen += [it["key"] for b in TokenLoader(ds, batch_size=2, num_workers=2, collate_fn=list) for it in b]
    assert sorted(seen) == sorted(keys) and len(seen) == len(set(seen))


def test_tar_resume_with_workers_continues_exactly(tmp_path):
    """Restoring a 2-worker loader after 2 batches gives the uninterrupted rest (buffer rows re-read from tars)."""
    write_output(tmp_path, UNEVEN, fmt="webdataset")

    def make() -> TokenLoader:
        return TokenLoader(TokenDataset(str(tmp_path), seed=4, shuffle_buffer=4), 2, 2, list)

    full = [it["key"] for b in make() for it in b]
    first = make()
    head = [it["key"] for b in itertools.islice(first, 2) for it in b]
    resumed = make()
    resumed.load_state_dict(first.state_dict())
    assert head + [it["key"] for b in resumed for it in b] == full
