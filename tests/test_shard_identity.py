"""Shard ids follow the shard's name under its pattern's root and its size, not where the root is."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipeline.readers.sources import pattern_root, resolve_shards
from schemas.config import SpecError
from tests.jobs_helpers import REPO, SMALL, read_summary, read_tokens, run_cli
from tests.output_support import fingerprint_for, make_spec


def _tree(root: Path, files: dict[str, int]) -> None:
    for name, size in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x" * size)


def test_pattern_root_is_the_prefix_before_any_brace_or_glob():
    assert pattern_root("data/shards-{000000..000003}.tar") == "data/"
    assert pattern_root("s3://bucket/videos/*/x.tar") == "s3://bucket/videos/"
    assert pattern_root("/abs/data/x.tar") == "/abs/data/"
    assert pattern_root("x.tar") == ""


def test_equal_names_in_different_folders_get_distinct_ids(tmp_path):
    """`a/x.tar` and `b/x.tar` of the same size under one pattern root are two shards."""
    _tree(tmp_path, {"a/x.tar": 10, "b/x.tar": 10})
    shards = resolve_shards(str(tmp_path / "*" / "x.tar"))
    assert [s.name for s in shards] == ["a/x.tar", "b/x.tar"]
    assert len({s.id for s in shards}) == 2 and all(s.id.startswith("x-") for s in shards)


def test_shards_that_would_share_an_id_are_refused_naming_the_field(tmp_path):
    """Listed one by one, each is named under its own folder: equal name and size would collide."""
    _tree(tmp_path, {"a/x.tar": 10, "b/x.tar": 10, "c/x.tar": 11})
    with pytest.raises(SpecError, match=r"input.shards.*would share shard id"):
        resolve_shards([str(tmp_path / "a/x.tar"), str(tmp_path / "b/x.tar")])
    ids = {s.id for s in resolve_shards([str(tmp_path / "a/x.tar"), str(tmp_path / "c/x.tar")])}
    assert len(ids) == 2  # the sizes differ


def test_ids_survive_moving_the_root_and_relative_spelling(tmp_path, monkeypatch):
    _tree(tmp_path / "old", {"shards-000000.tar": 5, "shards-000001.tar": 6})
    before = [s.id for s in resolve_shards(str(tmp_path / "old" / "shards-{000000..000001}.tar"))]
    shutil.move(tmp_path / "old", tmp_path / "mnt")
    monkeypatch.chdir(tmp_path)
    assert [s.id for s in resolve_shards("./mnt/shards-*.tar")] == before
    assert [s.id for s in resolve_shards(str(tmp_path / "mnt" / "shards-000000.tar"))] == before[:1]


def test_resume_into_an_output_of_url_hashed_ids_is_refused_with_the_reason(tmp_path):
    """Outputs from before root-relative ids stay readable, but a resume into them is refused."""
    from pipeline.writers.manifest import prepare_output

    spec = make_spec(str(tmp_path / "out"))
    fingerprint = fingerprint_for(spec)
    prepare_output(spec, fingerprint, 4)
    job = json.loads((tmp_path / "out" / "job.json").read_text())
    del job["fingerprint"]["shard_ids"]  # what tokenmill wrote before the change
    (tmp_path / "out" / "job.json").write_text(json.dumps(job))
    with pytest.raises(SpecError, match=r"shard_ids: null -> .*full URL.*new output.uri") as err:
        prepare_output(spec, fingerprint, 4)
    assert err.value.field == "shard_ids"


@pytest.mark.slow
def test_moved_input_folder_is_not_tokenized_again_and_eval_names_clips_alike(tmp_path):
    """A job over data/, the folder moved and the job rerun from there: nothing is redone; eval
    over the moved folder names its clips as the job did."""
    from pipeline.tokenizer_tools.evaluate import iter_eval_clips

    shutil.copytree(REPO / "data" / "sample", tmp_path / "data")
    out = tmp_path / "out"
    first = run_cli(out, *SMALL, f"input.shards={tmp_path / 'data'}/shards-{{000000..000003}}.tar")
    assert first.returncode == 0, first.stderr[-3000:]
    keys = set(read_tokens(out))
    shutil.move(tmp_path / "data", tmp_path / "remounted")
    again = run_cli(out, *SMALL, f"input.shards={tmp_path / 'remounted'}/*.tar")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "nothing to do" in again.stderr and read_summary(out)["shards_run"] == 0
    assert set(read_tokens(out)) == keys
    clips = iter_eval_clips(str(tmp_path / "remounted" / "shards-*.tar"), 9, (64, 64))
    first_clips = {c.key for c in clips if c.clip_index < 2}
    assert first_clips == keys
