"""Whole videos as one causal sequence (clips.num_frames: all) through real tokenizer actors on Ray.

The shard task (jobs.shard_task.stream_shard) runs in this process against real Ray actors, so a
test can kill an actor's process mid-row and compare the output with tokenizer_core's one-pass
encode of the same frames.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

import tokenizer_core
from jobs.actors import ActorSettings, tokenizer_actor_class
from jobs.pool import Roster
from jobs.shard_task import ActorRouter, ShardJob, stream_shard
from pipeline.readers.clips import DecodedClip, Grid, cut_clips
from pipeline.readers.sources import InputShard
from pipeline.records import ShardStats
from pipeline.writers.commit import ShardWriter
from pipeline.writers.token_files import optional_columns
from schemas.jobspec import ClipSpec, QualitySpec
from tests.fixtures.media import encode_frames, real_frames, write_tar
from tests.tokenizer_support import spread_tokenizer

GRID = Grid(4, 8)  # DV4x8x8-tiny


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """The tiny tokenizer with spread ids (random weights), as a checkpoint the actors load."""
    path = tmp_path_factory.mktemp("tok") / "spread.pt"
    tokenizer_core.save_checkpoint(spread_tokenizer("DV4x8x8-tiny"), str(path))
    return path


@pytest.fixture(scope="module")
def shard(tmp_path_factory, real_videos) -> Path:
    """A hard cut (carphone then bigbuckbunny) and a longer single-shot video (bigbuckbunny)."""
    joined = np.concatenate([real_frames(real_videos["carphone_pristine"], 30, 96, 64),
                             real_frames(real_videos["bigbuckbunny"], 40, 96, 64, start=40)])
    long = real_frames(real_videos["bigbuckbunny"], 120, 192, 128)
    path = tmp_path_factory.mktemp("shard") / "rows-000000.tar"
    return write_tar(path, [("cut.mp4", encode_frames(joined, 96, 64)), ("long.mp4", encode_frames(long, 192, 128))])


def _actor(ray_local, checkpoint: Path, refine_steps: int = 0):
    settings = ActorSettings(name=str(checkpoint), checkpoint=None, init="pretrained", dtype="float32",
                             device="cpu", num_gpus=0, num_cpus=0.5, torch_threads=1, batch_size=2,
                             refine_steps=refine_steps)
    actor = tokenizer_actor_class(settings).remote(settings)
    ray_local.get(actor.pid.remote())
    return actor


def _job(tmp: Path, clips: ClipSpec, sample_rate: float = 0.0) -> ShardJob:
    return ShardJob(str(tmp / "out"), "parquet", {}, {}, clips, "spread", batch_size=2, max_batches_in_flight=1,
                    isolate_decoder=False, grid=GRID, sample_rate=sample_rate,
                    optional_columns=optional_columns(clips, QualitySpec(sample_rate=sample_rate)))


def _run(job: ShardJob, url: str, actors: list) -> tuple[dict[str, dict], ShardStats]:
    stats = ShardStats()
    shard = InputShard(url, os.path.basename(url), os.path.getsize(url))
    writer = ShardWriter(job.output_uri, shard.id, url, optional_columns=job.optional_columns)
    roster = Roster(1, tuple((f"actor-{i}", actor, "") for i, actor in enumerate(actors)))
    stream_shard(job, shard, stats, writer, ActorRouter(roster))
    record = writer.commit(stats)
    table = pq.read_table(Path(job.output_uri) / record.outputs["tokens"].path)
    return {r["key"]: r for r in table.to_pylist()}, stats


def _one_pass(checkpoint: Path, data: bytes, clips: ClipSpec, refine_steps: int = 0) -> list[np.ndarray]:
    """Each row's ids from one full encode of its frames (cut in-process, chunks joined)."""
    torch.set_num_threads(1)
    tok = tokenizer_core.from_pretrained(str(checkpoint))
    rows: dict[int, list[np.ndarray]] = {}
    for piece in cut_clips(data, clips, grid=GRID):
        if isinstance(piece, DecodedClip):
            rows.setdefault(piece.index, []).append(piece.frames)
    out = []
    for chunks in rows.values():
        frames = torch.from_numpy(np.concatenate(chunks))  # [T, H, W, 3]
        video = frames.permute(3, 0, 1, 2)[None].float().div(127.5).sub(1.0)
        out.append(tok.encode(video, refine_steps=refine_steps)[0].numpy())
    return out


def _ids(row: dict) -> np.ndarray:
    return np.asarray(row["tokens"], np.int64).reshape(row["token_shape"])


def test_whole_video_ids_equal_one_pass_encode_and_quality_is_scored(ray_local, checkpoint, shard, tmp_path):
    """Each shot is one row whose streamed ids equal one full causal encode of the same frames;
    with sample_rate 1 every row has PSNR/SSIM of its round trip."""
    clips = ClipSpec(num_frames="all", split_scenes=True, resolution=(64, 96), chunk_frames=8)
    rows, stats = _run(_job(tmp_path, clips, sample_rate=1.0), str(shard), [_actor(ray_local, checkpoint)])
    cut = [rows[k] for k in sorted(rows) if rows[k]["sample_key"] == "cut"]
    assert [(r["start_frame"], r["num_frames"], r["scene_index"]) for r in cut] == [(0, 29, 0), (30, 37, 1)]
    want = _one_pass(checkpoint, _member(shard, "cut.mp4"), clips)
    for row, ids in zip(cut, want, strict=True):
        assert np.array_equal(_ids(row), ids)
        assert len(np.unique(ids)) >= 10  # the comparison is not between near-constant grids
    assert all(r["psnr"] is not None and 0 < r["ssim"] < 1 for r in rows.values())
    assert len(stats.quality) == len(rows) == stats.clips and stats.scene_cuts == 1


def test_refined_whole_video_ids_equal_one_refined_pass(ray_local, checkpoint, shard, tmp_path):
    """tokenizer.refine_steps on whole videos: the actor refines chunk by chunk through the row's
    stream and gets the ids of one refined pass over the row, which differ from the plain ones."""
    clips = ClipSpec(num_frames="all", split_scenes=True, resolution=(64, 96), chunk_frames=8)
    rows, _ = _run(_job(tmp_path, clips), str(shard), [_actor(ray_local, checkpoint, refine_steps=2)])
    cut = [rows[k] for k in sorted(rows) if rows[k]["sample_key"] == "cut"]
    data = _member(shard, "cut.mp4")
    plain = _one_pass(checkpoint, data, clips)
    for row, ids, before in zip(cut, _one_pass(checkpoint, data, clips, refine_steps=2), plain, strict=True):
        assert np.array_equal(_ids(row), ids) and not np.array_equal(ids, before)


def _member(shard: Path, name: str) -> bytes:
    import tarfile

    with tarfile.open(shard) as tar:
        handle = tar.extractfile(name)
        assert handle is not None
        return handle.read()


def test_killed_actor_mid_row_restarts_that_row(ray_local, checkpoint, shard, tmp_path, caplog):
    """SIGKILL of the actor while a long row streams: the row restarts (Ray brings the actor back)
    and its ids still equal the one-pass encode."""
    clips = ClipSpec(num_frames="all", resolution=(128, 192), chunk_frames=4, max_clips_per_video=1)
    actor = _actor(ray_local, checkpoint)
    pid = ray_local.get(actor.pid.remote())
    job = _job(tmp_path, clips)
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(rows=_run(job, str(shard), [actor])[0]))
    with caplog.at_level(logging.WARNING, logger="jobs.rows"):
        worker.start()
        deadline = time.time() + 120
        while ray_local.get(actor.stats.remote())["frames"] < 40 and time.time() < deadline:
            time.sleep(0.02)  # the long row is under way: its first chunks are encoded
        os.kill(pid, signal.SIGKILL)
        worker.join(timeout=200)
    assert "restarting it" in caplog.text, "the row finished before the kill; the test proves nothing"
    rows = {r["sample_key"]: r for r in result["rows"].values()}
    assert rows["cut"]["num_frames"] == 69 and rows["long"]["num_frames"] == 117
    for key in ("cut", "long"):
        (want,) = _one_pass(checkpoint, _member(shard, f"{key}.mp4"), clips)
        assert np.array_equal(_ids(rows[key]), want)
