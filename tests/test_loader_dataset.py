"""TokenDataset / TokenLoader: split, order, resume and refusal, on real token files and real workers."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import pipeline.writers.token_files as token_files
from pipeline.loader import IncompatibleStateError, TokenDataset, TokenLoader, shard_ids
from tests.loader_support import clip_ids, write_output

UNEVEN = [5, 7, 2]  # 14 clips over 3 shards: divides evenly by neither 2 ranks nor 4 consumers


@pytest.fixture
def small_groups(monkeypatch):
    """Row groups of 3 clips, so shards hold several groups and splits fall inside groups."""
    monkeypatch.setattr(token_files, "ROW_GROUP_ROWS", 3)


@pytest.fixture
def output(tmp_path, small_groups) -> tuple[Path, list[str]]:
    return tmp_path, write_output(tmp_path, UNEVEN)


def keys_of(items) -> list[str]:
    return [item["key"] for item in items]


def loader_keys(loader: TokenLoader, limit: int | None = None) -> list[str]:
    keys = []
    for batch in itertools.islice(loader, limit):  # islice fetches no batch beyond `limit`
        keys.extend(keys_of(batch))
    return keys


def test_items_carry_ids_shape_meta_and_source_fields(output):
    """An item is a dict with int64 tokens [t,h,w] equal to what was written, parsed meta and caption."""
    root, _ = output
    item = next(iter(TokenDataset(str(root), shuffle=False)))
    assert item["tokens"].dtype == torch.int64 and tuple(item["tokens"].shape) == (2, 3, 4)
    assert torch.equal(item["tokens"], torch.from_numpy(clip_ids(0, 0, (2, 3, 4))))
    assert item["meta"] == {"caption": "clip 0/0", "shard": 0, "row": 0}
    assert item["caption"] == "clip 0/0"
    assert item["sample_key"] == "video000" and item["num_frames"] == 5 and item["fps"] == 25.0


def test_two_ranks_two_workers_read_every_clip_exactly_once(output):
    """2 ranks x 2 DataLoader workers over uneven shards: the union is the dataset, no duplicates."""
    root, keys = output
    seen = []
    for rank in range(2):
        ds = TokenDataset(str(root), rank=rank, world_size=2, seed=3, shuffle_buffer=4)
        loader = TokenLoader(ds, batch_size=3, num_workers=2, collate_fn=list)
        batches = list(loader)
        got = [key for batch in batches for key in keys_of(batch)]
        assert len(got) == ds.num_samples == 7
        assert len(batches) == len(loader) == 3  # workers hold 4 and 3 clips: batches 3+1 and 3
        seen.extend(got)
    assert sorted(seen) == sorted(keys) and len(seen) == len(set(seen)) == 14


def test_more_consumers_than_shards_splits_inside_row_groups(tmp_path):
    """One shard of 5 clips over 3 ranks x 2 workers: rows are split, every consumer but one reads one."""
    keys = write_output(tmp_path, [5])
    seen = []
    for rank in range(3):
        ds = TokenDataset(str(tmp_path), rank=rank, world_size=3, shuffle=False)
        seen.extend(loader_keys(TokenLoader(ds, batch_size=1, num_workers=2, collate_fn=list)))
    assert sorted(seen) == sorted(keys)


def test_only_shards_with_manifest_records_are_read(tmp_path):
    """A shard without a record (unfinished) and a stray temporary file are invisible."""
    keys = write_output(tmp_path, [3, 4, 2], manifest=[True, False, True])
    (tmp_path / "tokens" / "_tmp").mkdir(exist_ok=True)
    (tmp_path / "tokens" / "_tmp" / "junk.parquet").write_bytes(b"partial")
    got = keys_of(TokenDataset(str(tmp_path), seed=1))
    assert sorted(got) == sorted(keys) and len(got) == 5


def test_shard_selection_reads_only_those_shards(output):
    """`shards=` restricts the dataset (e.g. a held-out split); an unknown id is an error naming it."""
    root, keys = output
    chosen = shard_ids(str(root))[1:]
    got = keys_of(TokenDataset(str(root), shards=chosen))
    assert sorted(got) == sorted(k for k in keys if k.split(".")[0] in chosen) and len(got) == 9
    with pytest.raises(KeyError, match="nope"):
        TokenDataset(str(root), shards=["nope"])


def test_order_is_a_function_of_seed_and_epoch(output):
    """Same seed and epoch: same order; another epoch or seed: another order of the same clips."""
    root, keys = output
    first = keys_of(TokenDataset(str(root), seed=7, shuffle_buffer=5))
    assert first == keys_of(TokenDataset(str(root), seed=7, shuffle_buffer=5))
    ds = TokenDataset(str(root), seed=7, shuffle_buffer=5)
    ds.set_epoch(1)
    other_epoch = keys_of(ds)
    other_seed = keys_of(TokenDataset(str(root), seed=8, shuffle_buffer=5))
    assert other_epoch != first and other_seed != first
    assert sorted(other_epoch) == sorted(first) == sorted(keys)
    assert keys_of(TokenDataset(str(root), shuffle=False)) == keys  # written order when not shuffled


@pytest.mark.parametrize(("world_size", "rank", "buffer", "cut"), [(1, 0, 6, 1), (1, 0, 6, 9), (1, 0, 6, 13), (2, 1, 4, 4)])
def test_in_process_resume_continues_exactly(output, world_size, rank, buffer, cut):
    """Stop after `cut` items, restore into a new dataset: the rest equals the uninterrupted run."""
    root, _ = output

    def make() -> TokenDataset:
        return TokenDataset(str(root), rank=rank, world_size=world_size, seed=5, shuffle_buffer=buffer)

    full = keys_of(make())
    ds = make()
    it = iter(ds)
    head = [next(it)["key"] for _ in range(cut)]
    state = json.loads(json.dumps(ds.state_dict()))  # a checkpoint goes through JSON/pickle
    fresh = make()
    fresh.load_state_dict(state)
    assert head + keys_of(fresh) == full


@pytest.mark.parametrize(("batch_size", "cut_batches"), [(2, 1), (2, 3), (3, 1), (3, 2)])
def test_worker_resume_continues_exactly(output, batch_size, cut_batches):
    """With 2 workers (one runs out first), restoring after k batches gives the uninterrupted rest."""
    root, _ = output

    def make() -> TokenLoader:
        ds = TokenDataset(str(root), rank=0, world_size=2, seed=11, shuffle_buffer=3)
        return TokenLoader(ds, batch_size=batch_size, num_workers=2, collate_fn=list)

    # rank 0 holds 7 clips, its workers 4 and 3: batch size 3 makes worker 1 run out first
    full = loader_keys(make())
    first = make()
    head = loader_keys(first, limit=cut_batches)
    state = first.state_dict()
    resumed = make()
    resumed.load_state_dict(state)
    assert head + loader_keys(resumed) == full
    assert state["batches"] == cut_batches


def test_state_after_epoch_end_and_next_epoch(output):
    """A state saved at the end of an epoch resumes to nothing; set_epoch then starts the new order."""
    root, keys = output
    ds = TokenDataset(str(root), seed=2)
    assert len(keys_of(ds)) == 14
    again = TokenDataset(str(root), seed=2)
    again.load_state_dict(ds.state_dict())
    assert keys_of(again) == []
    again.set_epoch(1)
    assert sorted(keys_of(again)) == sorted(keys)


def test_incompatible_states_are_refused_with_the_reason(output, small_groups):
    """World size, dataset contents, worker count and format version changes are refused, saying why."""
    root, _ = output
    ds = TokenDataset(str(root), rank=0, world_size=2, seed=0)
    state = ds.state_dict()
    with pytest.raises(IncompatibleStateError, match="world_size=2 but this reader has world_size=4"):
        TokenDataset(str(root), rank=0, world_size=4).load_state_dict(state)
    with pytest.raises(IncompatibleStateError, match="seed=0 but this reader has seed=1"):
        TokenDataset(str(root), rank=0, world_size=2, seed=1).load_state_dict(state)
    with pytest.raises(IncompatibleStateError, match="version"):
        ds.load_state_dict({**state, "version": 99})
    loader = TokenLoader(TokenDataset(str(root), rank=0, world_size=2), batch_size=2, num_workers=2)
    with pytest.raises(IncompatibleStateError, match="num_workers=0 but this loader has num_workers=2"):
        loader.load_state_dict({**state, "batch_size": 2, "batches": 0})
    write_output(root / "other", UNEVEN, ids_for=lambda s, r: clip_ids(s, r, (2, 3, 4)) // 2)
    rewritten = TokenDataset(str(root / "other"), rank=0, world_size=2)  # same layout, other ids
    with pytest.raises(IncompatibleStateError, match="another dataset: saved over 14 clips .* now holds 14"):
        rewritten.load_state_dict(state)
    write_output(root, UNEVEN + [3])  # one more shard finished since the state was saved
    grown = TokenDataset(str(root), rank=0, world_size=2)
    with pytest.raises(IncompatibleStateError, match="another dataset: saved over 14 clips .* now holds 17"):
        grown.load_state_dict(state)


def test_every_uint16_id_survives_disk_to_item(tmp_path):
    """All 65,536 uint16 values come back exactly, as int64 (no float anywhere on the path)."""
    all_ids = np.arange(1 << 16, dtype=np.int64).reshape(64, 4, 16, 16)
    write_output(tmp_path, [64], shape=(4, 16, 16), ids_for=lambda s, r: all_ids[r])
    items = sorted(TokenDataset(str(tmp_path), seed=0), key=lambda it: it["key"])
    got = torch.stack([it["tokens"] for it in items])
    assert got.dtype == torch.int64
    assert torch.equal(got, torch.from_numpy(all_ids))


def test_reading_is_streamed_one_row_group_at_a_time(output, monkeypatch):
    """The first item needs only the row groups its shuffle buffer covers, not the dataset."""
    root, _ = output
    reads = []
    original = TokenDataset._read

    def counting(self, segment):
        reads.append(segment)
        return original(self, segment)

    monkeypatch.setattr(TokenDataset, "_read", counting)
    next(iter(TokenDataset(str(root), shuffle_buffer=2)))
    assert len(reads) == 1  # 6 row groups in the dataset


@pytest.mark.parametrize("fmt", ["parquet", "webdataset"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_continuous_latents_come_back_bit_exact(tmp_path, dtype, fmt):
    """Latents [c,t,h,w] written by ShardWriter are returned with their shape, dtype and bits."""
    from pipeline.records import ShardStats
    from pipeline.writers.commit import ShardWriter
    from pipeline.writers.token_files import ClipInfo

    latents = {}
    writer = ShardWriter(str(tmp_path), "lat-00000000", "file:///src/lat.tar", fmt=fmt)
    for r in range(3):
        key = f"lat-00000000.v{r}.0000"
        latents[key] = torch.randn(4, 2, 3, 5, generator=torch.Generator().manual_seed(r)).to(dtype)
        info = ClipInfo(key, "file:///src/lat.tar", f"v{r}", 0, 0, 5, 25.0, 24, 40, None)
        writer.add(info, latents[key], "cv-test")
    writer.commit(ShardStats(samples_total=3, samples_ok=3, clips=3))
    items = list(TokenDataset(str(tmp_path), seed=0))
    assert sorted(it["key"] for it in items) == sorted(latents)
    for it in items:
        assert it["latents"].dtype == dtype and "tokens" not in it and it["meta"] is None
        assert torch.equal(it["latents"].view(torch.int16 if dtype == torch.bfloat16 else torch.int32),
                           latents[it["key"]].view(torch.int16 if dtype == torch.bfloat16 else torch.int32))


def test_tokenizer_config_comes_from_the_token_files(tmp_path):
    """The tokenizer config a job stores in its Parquet metadata is available (vocab size, FSQ levels)."""
    from pipeline.records import ShardStats
    from pipeline.writers.commit import ShardWriter
    from pipeline.writers.token_files import ClipInfo
    from schemas.tokens import META_TOKENIZER_CONFIG

    config = {"name": "DV4x8x8-tiny", "levels": [8, 8, 8, 5, 5, 5], "vocab_size": 64_000}
    writer = ShardWriter(str(tmp_path), "cfg-00000000", "file:///src/cfg.tar",
                         file_metadata={META_TOKENIZER_CONFIG: json.dumps(config)})
    writer.add(ClipInfo("cfg-00000000.v.0000", "file:///src/cfg.tar", "v", 0, 0, 5, 25.0, 16, 16),
               np.zeros((2, 2, 2), dtype=np.int64), "DV4x8x8-tiny")
    writer.commit(ShardStats(samples_total=1, samples_ok=1, clips=1))
    assert TokenDataset(str(tmp_path)).tokenizer_config == config
