"""Hostile member names never become hostile paths: one key grammar, escaped keys, provenance kept."""

from __future__ import annotations

import os
import re
import tarfile
import warnings

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.readers.stages import iter_shard
from pipeline.records import MAX_KEY_CHARS, Clip, DeadLetter, ShardStats, clip_key, safe_key, shard_id
from pipeline.writers.commit import ShardWriter
from schemas.jobspec import ClipSpec
from tests.fixtures.media import encode_video, write_tar

HOSTILE = ["../../../../tmp/x", "/tmp/y", "..", ".", "", "a//b", "a/./b", "a\x00b", "a\nb\x1b[31m",
           "C:\\Windows\\x", "~root", "-rf", "clip_é", "视频/一", "x" * 1000, "a b", "a_b", ".hidden/v"]


def _in_grammar(key: str) -> bool:
    segments = key.split("/")
    return (not key.startswith("/") and all(s not in ("", ".", "..") for s in segments)
            and not re.search(r"[\x00-\x1f\x7f]", key) and key.isascii() and len(key) <= MAX_KEY_CHARS)


def test_keys_in_the_grammar_pass_unchanged_and_others_are_escaped_distinctly_and_stably():
    """safe_key: identity on ordinary keys, an escaped form for hostile ones, distinct and idempotent."""
    for key in ["abc", "dir/abc", "v1.2/clip_0001", "shard-1a2b.dir/x.0003", "A-b_C"]:
        assert safe_key(key) == key
    escaped = [safe_key(k) for k in HOSTILE]
    assert all(_in_grammar(k) for k in escaped), escaped
    assert len(set(escaped)) == len(HOSTILE)  # "a b" and "a_b" stay apart
    assert [safe_key(k) for k in escaped] == escaped
    # pinned: the escape is part of the output contract (keys stable across reruns and releases)
    assert safe_key("../../../../tmp/x") == "tmp/x~165341d33f7b"
    assert safe_key("/tmp/y") == "tmp/y~46068d055f04" and safe_key("a b") == "a_b~7dbde9350412"
    assert clip_key("s-0", "../../x", 3) == f"s-0.{safe_key('../../x')}.0003"


@pytest.fixture(scope="module")
def hostile_shard(tmp_path_factory):
    """Real videos under path-traversal names, an absolute name, and an ordinary one."""
    video = encode_video(64, 48, 9)
    folder = tmp_path_factory.mktemp("hostile")
    members = [("../../../../tmp/x.mp4", video), ("../../../../tmp/x.json", b'{"n": 1}'),
               ("/tmp/y.mp4", video), ("ok.mp4", video), ("bad\x1b[2J.txt", b"no video")]
    return write_tar(folder / "hostile-000000.tar", members)


def _write(shard, out, fmt: str):
    stats = ShardStats()
    url = str(shard)
    writer = ShardWriter(str(out), shard_id(url), url, fmt=fmt)
    items = list(iter_shard(url, ClipSpec(num_frames=9, resolution=(32, 32)), None, stats, isolate=False))
    for item in items:
        if isinstance(item, DeadLetter):
            writer.add_error(item)
        else:
            writer.add(item, np.zeros((3, 4, 4), np.int64), "test")
    return writer.commit(stats), items


@pytest.mark.parametrize("fmt", ["parquet", "webdataset"])
def test_hostile_member_names_give_safe_unique_keys_and_keep_the_original_name(hostile_shard, tmp_path, fmt):
    """sample_key is the escaped key, source_member the name as the shard spells it, in both formats."""
    record, items = _write(hostile_shard, tmp_path / "out", fmt)
    clips = [i for i in items if isinstance(i, Clip)]
    assert [c.source_member for c in clips] == ["../../../../tmp/x.mp4", "/tmp/y.mp4", "ok.mp4"]
    assert [c.sample_key for c in clips] == [safe_key("../../../../tmp/x"), safe_key("/tmp/y"), "ok"]
    assert all(_in_grammar(c.key) for c in clips) and len({c.key for c in clips}) == 3
    (letter,) = [i for i in items if isinstance(i, DeadLetter)]
    assert letter.reason == "read:NoVideoMember" and letter.source_member == "bad\x1b[2J.txt"
    assert "\x1b" not in letter.sample_key and "\x1b" not in letter.message
    errors = pq.read_table(tmp_path / "out" / record.outputs["errors"].path).to_pylist()
    assert errors[0]["source_member"] == "bad\x1b[2J.txt"
    if fmt == "parquet":
        rows = pq.read_table(tmp_path / "out" / record.outputs["tokens"].path).to_pylist()
        assert [r["source_member"] for r in rows] == [c.source_member for c in clips]
        assert [r["sample_key"] for r in rows] == [c.sample_key for c in clips]


def _files_under(root) -> set[str]:
    return {os.path.join(d, f) for d, _, files in os.walk(root) for f in files}


def test_the_token_tar_extracts_inside_its_folder_with_and_without_a_filter(hostile_shard, tmp_path):
    """Every member name is relative and '..'-free: tarfile's "data" filter accepts them all, and
    an unfiltered extractall writes nothing outside the target folder."""
    record, _ = _write(hostile_shard, tmp_path / "out", "webdataset")
    token_tar = tmp_path / "out" / record.outputs["tokens"].path
    with tarfile.open(token_tar) as tar:
        names = tar.getnames()
    assert len(names) == 6 and len(set(names)) == 6
    assert all(_in_grammar(n) for n in names), names
    sandbox = tmp_path / "sandbox"
    deep = sandbox / "a" / "b" / "c" / "d"  # four '..' from here would still land in the sandbox
    absolute_before = os.path.exists("/tmp/y_0000.npy")
    for target, kwargs in ((deep / "filtered", {"filter": "data"}), (deep / "unfiltered", {})):
        target.mkdir(parents=True)
        with tarfile.open(token_tar) as tar, warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+ warns without a filter
            tar.extractall(target, **kwargs)
        assert _files_under(target) == {str(target / n) for n in names}
    assert _files_under(sandbox) == _files_under(deep)
    assert os.path.exists("/tmp/y_0000.npy") == absolute_before
