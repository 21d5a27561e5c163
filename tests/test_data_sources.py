"""Shard list expansion (paths, braces, globs, lists, URL files) and streaming opens."""

from __future__ import annotations

import gzip

import pytest

from pipeline.readers.sources import expand_braces, expand_shards, open_url
from schemas.config import SpecError


@pytest.fixture
def shard_dir(tmp_path):
    for i in range(4):
        (tmp_path / f"shards-{i:06d}.tar").write_bytes(b"x" * (i + 1))
    (tmp_path / "other.txt.bak").write_bytes(b"")
    return tmp_path


def test_brace_ranges_keep_zero_padding_and_alternatives_expand():
    assert expand_braces("a-{008..011}.tar") == ["a-008.tar", "a-009.tar", "a-010.tar", "a-011.tar"]
    assert expand_braces("{x,y}/{1..2}") == ["x/1", "x/2", "y/1", "y/2"]
    assert expand_braces("plain.tar") == ["plain.tar"]
    assert expand_braces("lit{x}.tar") == ["lit{x}.tar"]


def test_brace_range_over_local_files_is_sorted_and_complete(shard_dir):
    urls = expand_shards(str(shard_dir / "shards-{000000..000003}.tar"))
    assert urls == [str(shard_dir / f"shards-{i:06d}.tar") for i in range(4)]


def test_glob_and_list_are_merged_sorted_and_deduplicated(shard_dir):
    urls = expand_shards([str(shard_dir / "shards-00000[23].tar"), str(shard_dir / "*.tar"),
                          str(shard_dir / "shards-000001.tar")])
    assert urls == sorted({str(shard_dir / f"shards-{i:06d}.tar") for i in range(4)})


def test_text_file_of_urls_resolves_relative_lines_and_skips_comments(shard_dir):
    listing = shard_dir / "train.txt"
    listing.write_text("# my shards\nshards-000001.tar\n\n" + str(shard_dir / "shards-00000{2..3}.tar") + "\n")
    urls = expand_shards(str(listing))
    assert urls == [str(shard_dir / f"shards-{i:06d}.tar") for i in (1, 2, 3)]


def test_nothing_matching_is_a_spec_error_naming_the_field(shard_dir):
    with pytest.raises(SpecError, match="input.shards.*no file matches"):
        expand_shards(str(shard_dir / "nope-*.tar"))
    with pytest.raises(SpecError, match=r"no such shard file: .*shards-000004.tar.*\(and 3 more\)"):
        expand_shards(str(shard_dir / "shards-{000003..000009}.tar"))


def test_open_url_streams_plain_and_gzipped_shards(tmp_path):
    payload = bytes(range(256)) * 1000
    (tmp_path / "a.tar").write_bytes(payload)
    (tmp_path / "b.tar.gz").write_bytes(gzip.compress(payload))
    for name in ("a.tar", "b.tar.gz"):
        with open_url(str(tmp_path / name)) as f:
            assert f.read(1000) == payload[:1000]
            assert f.read() == payload[1000:]
    with open_url(f"file://{tmp_path / 'a.tar'}") as f:
        assert f.read() == payload


def test_open_url_of_a_missing_file_raises_the_filesystem_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        open_url(str(tmp_path / "missing.tar"))


def test_http_shards_stream_through_fsspec(tmp_path, sample_shards):
    import functools
    import http.server
    import threading

    from pipeline.readers.stages import iter_shard
    from pipeline.records import Clip, ShardStats
    from schemas.jobspec import ClipSpec

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # keep the test output readable
            pass

    handler = functools.partial(Quiet, directory=str(sample_shards[0].parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        urls = expand_shards(base + "/shards-{000002..000003}.tar")
        assert urls == [f"{base}/shards-000002.tar", f"{base}/shards-000003.tar"]
        stats = ShardStats()
        clips = [x for x in iter_shard(urls[1], ClipSpec(num_frames=17, resolution=(32, 32)), None, stats,
                                       isolate=False) if isinstance(x, Clip)]
        assert stats.samples_ok == stats.samples_total == 2 and len(clips) == stats.clips > 0
    finally:
        server.shutdown()
