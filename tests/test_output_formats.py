"""Token shard formats: Parquet and WebDataset round trips, explicit schema, plain-reader access."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
import torch

from pipeline.records import Clip, ShardStats, clip_key, shard_id
from pipeline.writers.commit import ClipInfo, ShardWriter
from schemas.tokens import (
    MAX_VOCAB_SIZE,
    META_FINGERPRINT,
    META_SCHEMA_VERSION,
    TOKENS_SCHEMA_VERSION,
    check_vocab_size,
)
from tests.output_support import TOKEN_SHAPE, clip_ids, fingerprint_for, make_spec, write_shard

URL = "/data/in-000000.tar"


@pytest.fixture
def written(tmp_path):
    spec = make_spec(str(tmp_path / "out"))
    fp = fingerprint_for(spec)
    record = write_shard(spec.output.uri, URL, fp)
    return tmp_path / "out", record, fp


def test_parquet_round_trip_keeps_every_id_and_field(written):
    """Each clip's ids come back exactly, reshaped by token_shape, with the row fields."""
    out, record, _ = written
    table = pq.read_table(out / record.outputs["tokens"].path)
    assert table.num_rows == record.outputs["tokens"].rows == 6
    for row in table.to_pylist():
        sample, clip = int(row["sample_key"][-3:]), row["clip_index"]
        ids = np.asarray(row["tokens"], dtype=np.int64).reshape(row["token_shape"])
        np.testing.assert_array_equal(ids, clip_ids(URL, sample, clip))
        assert row["key"] == clip_key(shard_id(URL), row["sample_key"], clip)
        assert (row["num_frames"], row["height"], row["width"], row["fps"]) == (9, 32, 40, 25.0)
        assert (row["meta"] is None) == (sample % 2 == 1)


def test_parquet_schema_is_explicit_and_metadata_carries_fingerprint(written):
    """The id column is list<uint16>; file metadata holds schema version and job fingerprint."""
    out, record, fp = written
    pf = pq.ParquetFile(out / record.outputs["tokens"].path)
    schema = pf.schema_arrow
    assert str(schema.field("tokens").type) == "list<element: uint16 not null>"
    meta = {k.decode(): v.decode() for k, v in schema.metadata.items()}
    assert meta[META_SCHEMA_VERSION] == str(TOKENS_SCHEMA_VERSION)
    assert json.loads(meta[META_FINGERPRINT])["digest"] == fp["digest"]
    assert pf.metadata.row_group(0).column(11).compression == "ZSTD"


def test_error_rows_are_written_with_reason(written):
    out, record, _ = written
    rows = pq.read_table(out / record.outputs["errors"].path).to_pylist()
    assert rows == [{"source_url": URL, "sample_key": "broken", "stage": "decode", "error_type": "DecodeError",
                     "reason": "decode:DecodeError", "message": "moov atom not found", "source_member": ""}]


def test_plain_readers_see_the_rows_without_project_code(written):
    """pyarrow.dataset, DuckDB and HF datasets read the tokens directory directly."""
    import duckdb
    from datasets import load_dataset

    out, _, _ = written
    assert pads.dataset(out / "tokens", format="parquet").count_rows() == 6
    con = duckdb.connect()
    n, width = con.execute(f"select count(*), max(len(tokens)) from read_parquet('{out}/tokens/*.parquet')").fetchone()
    assert (n, width) == (6, int(np.prod(TOKEN_SHAPE)))
    ds = load_dataset("parquet", data_files=str(out / "tokens" / "*.parquet"), split="train",
                      cache_dir=str(out.parent / "hf-cache"))
    assert len(ds) == 6 and len(ds[0]["tokens"]) == int(np.prod(TOKEN_SHAPE))


def test_webdataset_round_trip_carries_the_same_information(tmp_path):
    """A .tar token shard read with the webdataset library gives the same ids and fields."""
    import webdataset as wds

    spec = make_spec(str(tmp_path / "out"), **{"output.format": "webdataset"})
    record = write_shard(spec.output.uri, URL, fingerprint_for(spec), fmt="webdataset")
    path = tmp_path / "out" / record.outputs["tokens"].path
    assert path.suffix == ".tar"
    samples = list(wds.WebDataset(str(path), shardshuffle=False).decode())
    assert len(samples) == 6
    for s in samples:
        row = s["json"]
        np.testing.assert_array_equal(s["npy"].astype(np.int64), clip_ids(URL, int(row["sample_key"][-3:]),
                                                                        row["clip_index"]))
        assert s["npy"].dtype == np.uint16 and list(s["npy"].shape) == row["token_shape"]
        assert row["key"] == clip_key(shard_id(URL), row["sample_key"], row["clip_index"])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_continuous_latents_round_trip_bit_exact(tmp_path, dtype):
    """Latents come back bit-exact from bytes + latent_shape + latent_dtype (bf16 included)."""
    w = ShardWriter(str(tmp_path / "out"), "s-1", URL, kind="continuous")
    latent = torch.randn(4, 2, 3, 5).to(dtype)  # [c, t, h, w]
    w.add(ClipInfo("s-1.a.0000", URL, "a", 0, 0, 5, 24.0, 24, 40), latent, "CV4x8x8-tiny")
    record = w.commit(ShardStats(samples_total=1, samples_ok=1))
    row = pq.read_table(tmp_path / "out" / record.outputs["tokens"].path).to_pylist()[0]
    assert row["latent_dtype"] == str(dtype).removeprefix("torch.")
    back = torch.frombuffer(bytearray(row["latents"]), dtype=dtype).reshape(row["latent_shape"])
    assert torch.equal(back.float(), latent.float())
    assert bytes(row["latents"]) == latent.contiguous().view(torch.uint8).numpy().tobytes()


def test_clip_frames_only_give_their_shape(tmp_path):
    """Adding a Clip uses its frames' shape for num_frames/height/width."""
    w = ShardWriter(str(tmp_path / "out"), "s-2", URL)
    clip = Clip("s-2.a.0000", URL, "a", 0, 0, 30.0, np.zeros((9, 16, 24, 3), np.uint8), None)
    w.add(clip, np.zeros(TOKEN_SHAPE, np.int64), "tok")
    record = w.commit(ShardStats(samples_total=1, samples_ok=1))
    row = pq.read_table(tmp_path / "out" / record.outputs["tokens"].path).to_pylist()[0]
    assert (row["num_frames"], row["height"], row["width"]) == (9, 16, 24)
    assert record.stats["clips"] == 1 and record.stats["tokens"] == int(np.prod(TOKEN_SHAPE))


def test_ids_outside_uint16_are_refused(tmp_path):
    """A vocabulary beyond 65,536 ids cannot be stored: refused up front and per clip."""
    with pytest.raises(ValueError, match="65,536"):
        check_vocab_size(MAX_VOCAB_SIZE + 1, "huge")
    check_vocab_size(64_000)
    w = ShardWriter(str(tmp_path / "out"), "s-3", URL)
    with pytest.raises(ValueError, match="uint16"):
        w.add(ClipInfo("s-3.a.0000", URL, "a", 0, 0, 9, 25.0, 32, 40), np.full(TOKEN_SHAPE, 70_000), "tok")
    w.abort()


def test_empty_shard_still_gets_token_and_error_files(tmp_path):
    """A shard whose samples all failed publishes an empty token file and its error rows."""
    w = ShardWriter(str(tmp_path / "out"), "s-4", URL)
    record = w.commit(ShardStats(samples_total=0))
    assert record.outputs["tokens"].rows == 0
    assert pq.read_table(tmp_path / "out" / record.outputs["tokens"].path).num_rows == 0
    assert pq.read_table(tmp_path / "out" / record.outputs["errors"].path).num_rows == 0


def test_empty_shard_of_a_continuous_job_has_the_continuous_schema(tmp_path):
    """The tokenizer config in the file metadata fixes the schema even when no clip arrives."""
    from pipeline.writers.fingerprint import token_file_metadata

    meta = token_file_metadata({"digest": "d"}, {"discrete": False, "vocab_size": None}, "w")
    record = ShardWriter(str(tmp_path / "out"), "s-5", URL, file_metadata=meta).commit(ShardStats())
    schema = pq.read_schema(tmp_path / "out" / record.outputs["tokens"].path)
    assert "latents" in schema.names and "tokens" not in schema.names


def test_job_with_a_too_large_vocabulary_is_refused_at_fingerprint_time(tmp_path):
    """A 2**17-id tokenizer is a SpecError on tokenizer.name before anything is written."""
    from pipeline.writers.fingerprint import job_fingerprint
    from schemas.config import SpecError

    spec = make_spec(str(tmp_path / "out"))
    with pytest.raises(SpecError) as err:
        job_fingerprint(spec, {"discrete": True, "vocab_size": 1 << 17}, "w")
    assert err.value.field == "tokenizer.name" and "131,072" in str(err.value)
