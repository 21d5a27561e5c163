"""Loader start-up reads the file index the job's last run wrote, not a listing and every footer."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

import pipeline.writers.storage as storage
from pipeline.loader import TokenDataset
from pipeline.writers.file_index import write_file_index
from pipeline.writers.manifest import prepare_output, read_manifest
from tests.loader_support import write_output
from tests.output_support import fingerprint_for, make_spec


@pytest.fixture
def output(tmp_path):
    """A finished job: three shards (one of two row groups, one empty), job.json, file index."""
    keys = write_output(tmp_path, [300, 5, 0])
    spec = make_spec(str(tmp_path))
    prepare_output(spec, fingerprint_for(spec), 3)
    assert write_file_index(str(tmp_path), read_manifest(str(tmp_path)))
    return tmp_path, spec, keys


def _forbid_listing_and_footers(monkeypatch) -> list[str]:
    opened: list[str] = []

    def no_listing(*args, **kwargs):
        raise AssertionError("start-up listed _manifest/")

    class CountingParquetFile(pq.ParquetFile):
        def __init__(self, source, *args, **kwargs):
            opened.append(str(getattr(source, "path", source)))
            super().__init__(source, *args, **kwargs)

    monkeypatch.setattr(storage, "list_versions", no_listing)
    monkeypatch.setattr("pipeline.loader.dataset.pq.ParquetFile", CountingParquetFile)
    return opened


def test_records_carry_each_token_files_row_groups(output):
    root, _, _ = output
    for record in read_manifest(str(root)).values():
        tokens = record.outputs["tokens"]
        meta = pq.ParquetFile(root / tokens.path).metadata
        assert tokens.row_groups == [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    assert read_manifest(str(root))["shard000-0000abcd"].outputs["tokens"].row_groups == [256, 44]


def test_start_up_from_the_file_index_neither_lists_nor_opens_footers(output, monkeypatch):
    root, _, keys = output
    opened = _forbid_listing_and_footers(monkeypatch)
    ds = TokenDataset(str(root), shuffle=False)
    assert opened == [] and ds.total_samples == 305 and len(ds.units) == 3
    monkeypatch.undo()
    assert sorted(item["key"] for item in ds) == sorted(keys)


def test_a_later_run_outdates_the_file_index_and_start_up_lists_again(output, monkeypatch):
    """A run in progress may add records the index lacks: only the listing knows them."""
    root, spec, _ = output
    indexed = TokenDataset(str(root), shuffle=False)
    prepare_output(spec, fingerprint_for(spec), 3)  # the next run starts
    _forbid_listing_and_footers(monkeypatch)
    with pytest.raises(AssertionError, match="listed _manifest"):
        TokenDataset(str(root), shuffle=False)
    monkeypatch.undo()
    assert TokenDataset(str(root), shuffle=False).fingerprint == indexed.fingerprint


def test_records_without_row_groups_fall_back_to_footers_with_the_same_plan(output):
    """Outputs written before records carried row groups read as before (same dataset identity)."""
    root, _, _ = output
    indexed = TokenDataset(str(root), shuffle=False)
    for path in (root / "_manifest").glob("*.json"):
        record = json.loads(path.read_text())
        del record["outputs"]["tokens"]["row_groups"]
        path.write_text(json.dumps(record, sort_keys=True))
    assert not write_file_index(str(root), read_manifest(str(root)))  # no index without row groups
    (root / "_manifest" / "_files.parquet").unlink()
    old = TokenDataset(str(root), shuffle=False)
    assert old.fingerprint == indexed.fingerprint and old.units == indexed.units
