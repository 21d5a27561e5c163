"""Repair: a finished run's lost or torn token files are restored by the next run."""

from __future__ import annotations

import json

from tests.jobs_helpers import SMALL, read_summary, read_tokens, run_cli


def _records(out) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((out / "_manifest").glob("*.json"))}


def _published(out) -> set[str]:
    return {f"{sub}/{p.name}" for sub in ("tokens", "errors") for p in (out / sub).iterdir() if p.is_file()}


def test_deleted_and_truncated_token_files_are_restored_by_the_rerun(tmp_path):
    """Finished 4-shard run; delete one token file, cut another to 100 bytes; the rerun redoes
    exactly those two shards, and the files read back equal to the first run's rows."""
    out = tmp_path / "out"
    first = run_cli(out, *SMALL)
    assert first.returncode == 0, first.stderr[-3000:]
    before = read_tokens(out)
    records = _records(out)
    assert len(records) == 4 and len(before) == read_summary(out)["clips_written"] > 0
    victims = sorted(records)[:2]
    (out / records[victims[0]]["outputs"]["tokens"]["path"]).unlink()
    with open(out / records[victims[1]]["outputs"]["tokens"]["path"], "r+b") as f:
        f.truncate(100)

    again = run_cli(out, *SMALL)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming: 2 of 4 shards already done, 2 to go" in again.stderr
    after = _records(out)
    assert {k: v["attempt_id"] for k, v in after.items() if k not in victims} == \
        {k: v["attempt_id"] for k, v in records.items() if k not in victims}  # the others untouched
    for sid in victims:
        assert after[sid]["attempt_id"] != records[sid]["attempt_id"]
        tokens = after[sid]["outputs"]["tokens"]
        assert (out / tokens["path"]).stat().st_size == tokens["size"]
    assert read_tokens(out) == before  # restored: same keys, identical ids, no duplicates
    # the folders hold exactly the recorded files; the damaged records were set aside
    assert _published(out) == {o["path"] for r in after.values() for o in r["outputs"].values()}
    assert len(list((out / "_manifest" / "_superseded").glob("*.json"))) == 2
    summary = read_summary(out)
    assert summary["shards_done"] == 4 and summary["clips_written"] == len(before)
    assert all(r["extra"]["device"] == "cpu" and r["extra"]["dtype"] == "float32" for r in after.values())
