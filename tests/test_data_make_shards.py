"""`tokenmill make-shards`: folders of videos + sidecars -> WebDataset shards -> clips again."""

from __future__ import annotations

import json
import shutil

from jobs.cli import main
from pipeline.readers.sources import expand_shards
from pipeline.readers.stages import iter_shard
from pipeline.records import Clip, ShardStats
from schemas.jobspec import ClipSpec


def _folder(tmp_path, real_videos):
    src = tmp_path / "videos"
    (src / "sub").mkdir(parents=True)
    shutil.copy(real_videos["carphone_pristine"], src / "carphone.mp4")
    (src / "carphone.json").write_text(json.dumps({"caption": "a man in a car"}))
    shutil.copy(real_videos["bikes"], src / "sub" / "bikes.v2.mp4")  # a dot in the stem
    (src / "sub" / "bikes.v2.txt").write_text("cyclists")
    shutil.copy(real_videos["carphone_distorted"], src / "sub" / "carphone.mp4")  # same stem again
    (src / "notes.md").write_text("not a video")
    return src


def test_make_shards_round_trip_through_iter_shard(tmp_path, real_videos, capsys):
    src = _folder(tmp_path, real_videos)
    prefix = tmp_path / "out" / "train"
    assert main(["make-shards", str(src), "--output", str(prefix), "--max-count", "2"]) == 0
    urls = expand_shards(str(prefix) + "-*.tar")
    assert [u.rsplit("/", 1)[-1] for u in urls] == ["train-000000.tar", "train-000001.tar"]
    assert capsys.readouterr().out.split() == urls
    clips, stats = [], ShardStats()
    for url in urls:
        clips += [x for x in iter_shard(url, ClipSpec(num_frames=17, resolution=(32, 32)), None, stats)
                  if isinstance(x, Clip)]
    assert stats.samples_total == stats.samples_ok == 3 and not stats.failures
    meta = {c.sample_key: c.meta for c in clips}
    assert set(meta) == {"carphone", "bikes_v2", "carphone_2"}
    assert json.loads(meta["carphone"]) == {"caption": "a man in a car"}
    assert json.loads(meta["bikes_v2"]) == {"txt": "cyclists"} and meta["carphone_2"] is None
    assert sum(c.sample_key == "bikes_v2" for c in clips) == 250 // 17


def test_max_size_closes_shards_early_and_globs_select_files(tmp_path, real_videos):
    src = _folder(tmp_path, real_videos)
    prefix = tmp_path / "small"
    assert main(["make-shards", str(src / "**" / "*.mp4"), "--output", str(prefix), "--max-size-mb", "0.01"]) == 0
    assert len(list(tmp_path.glob("small-*.tar"))) == 3  # every video is over 10 kB: one per shard
    assert not list(tmp_path.glob("*.tmp"))


def test_bad_usage_exits_2_and_writes_nothing(tmp_path, capsys):
    assert main(["make-shards", str(tmp_path / "missing"), "--output", str(tmp_path / "x")]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["make-shards", str(tmp_path / "empty"), "--output", str(tmp_path / "x")]) == 2
    assert "no video files" in capsys.readouterr().err
    assert not list(tmp_path.glob("x-*"))
