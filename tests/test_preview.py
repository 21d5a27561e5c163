"""`tokenmill preview` on a real job output: a readable PNG and MP4 of the right size."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest
import torch
from PIL import Image

import tokenizer_core
from jobs.cli import main
from pipeline.loader.listing import resolve_key
from pipeline.readers.stages import iter_shard
from pipeline.records import Clip, ShardStats, shard_id
from pipeline.tokenizer_tools.preview import LABEL_HEIGHT, safe_name
from pipeline.writers.commit import ShardWriter
from pipeline.writers.fingerprint import job_fingerprint, token_file_metadata
from pipeline.writers.manifest import prepare_output
from schemas.jobspec import parse_job_spec

SHARD = "shards-000001.tar"
SIZE = 64
FRAMES = 9


@pytest.fixture(scope="module")
def job_output(sample_shards, tmp_path_factory):
    """A job output written by the real data plane, tokenizer and shard writer (no Ray needed)."""
    shard = str(next(s for s in sample_shards if s.name == SHARD))
    out = str(tmp_path_factory.mktemp("job") / "out")
    spec = parse_job_spec({
        "input": {"shards": shard},
        "tokenizer": {"name": "DV4x8x8-tiny", "init": "random"},
        "clips": {"num_frames": FRAMES, "resolution": [SIZE, SIZE], "max_clips_per_video": 1},
        "output": {"uri": out},
    })
    tok = tokenizer_core.from_pretrained("DV4x8x8-tiny", init="random")
    fingerprint = job_fingerprint(spec, tok.config.to_dict(), tok.weights_hash)
    prepare_output(spec, fingerprint, 1)
    meta = token_file_metadata(fingerprint, tok.config.to_dict(), tok.weights_hash)
    writer = ShardWriter(out, shard_id(shard), shard, file_metadata=meta)
    stats, keys = ShardStats(), []
    for item in iter_shard(shard, spec.clips, None, stats, isolate=False):
        assert isinstance(item, Clip)
        video = torch.from_numpy(item.frames).permute(3, 0, 1, 2)[None].float() / 127.5 - 1
        writer.add(item, tok.encode(video)[0], tok.config.name)
        keys.append(item.key)
    writer.commit(stats)
    return out, keys


def test_preview_writes_png_and_mp4_of_the_right_size(job_output, tmp_path, capsys):
    out, keys = job_output
    key = keys[-1]
    assert main(["preview", out, "--key", key, "--out", str(tmp_path / "pv"), "--frames", "4"]) == 0
    assert "clip PSNR" in capsys.readouterr().out
    png = tmp_path / "pv" / f"{safe_name(key)}-compare.png"
    with Image.open(png) as image:
        image.load()
        assert image.mode == "RGB"
        assert image.size == (4 * SIZE, LABEL_HEIGHT + 2 * (SIZE + LABEL_HEIGHT))
        pixels = np.asarray(image)
    # the top row holds the original frames: real content, not a blank canvas
    assert pixels[LABEL_HEIGHT:LABEL_HEIGHT + SIZE].std() > 10
    with av.open(str(tmp_path / "pv" / f"{safe_name(key)}.mp4")) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == FRAMES and frames[0].shape == (SIZE, SIZE, 3)


def test_unknown_key_is_a_usage_error(job_output, tmp_path, capsys):
    out, keys = job_output
    missing = keys[0].rsplit(".", 1)[0] + ".9999"
    assert main(["preview", out, "--key", missing, "--out", str(tmp_path)]) == 2
    assert "--key" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_keys_become_safe_file_names():
    """A clip key's folders are joined by '_'; a key outside the key grammar is escaped first."""
    assert safe_name("shard-1a2b.videos/clip_01.0003") == "shard-1a2b.videos_clip_01.0003"
    assert safe_name("shard-1a2b.videos/clip 01.0003").startswith("shard-1a2b.videos_clip_01.0003~")
    hostile = safe_name("../../etc/passwd")
    assert "/" not in hostile and not hostile.startswith(".")


def test_ls_lists_every_clip_with_its_token_shape(job_output, capsys):
    out, keys = job_output
    assert main(["ls", out, "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["key"] for r in rows] == keys
    assert all(r["token_shape"] == [3, 8, 8] and r["source_url"].endswith(SHARD) for r in rows)


def test_preview_takes_a_sample_key_or_a_key_prefix(job_output):
    out, keys = job_output
    sample_prefix = keys[1].rsplit(".", 1)[0]  # <shard-id>.<sample-key>: its first clip
    assert resolve_key(out, sample_prefix) == keys[1]
    assert resolve_key(out, keys[1]) == keys[1]


def test_problems_that_are_not_spec_errors_say_error(job_output, tmp_path, capsys):
    out, _ = job_output
    assert main(["preview", out, "--key", "no-such-clip", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "tokenmill preview: error: --key" in err and "invalid spec" not in err and "tokenmill ls" in err
    assert main(["status", str(tmp_path / "nothing")]) == 2
    assert "tokenmill status: error: OUTPUT" in capsys.readouterr().err
