"""`tokenmill run` end to end on the bundled real shards through an embedded local Ray."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import torch

from schemas.jobspec import load_job_spec
from tests.jobs_helpers import DEMO, SMALL, manifest_ids, read_summary, read_tokens, run_cli

INTERFACE_COLUMNS = {"key", "source_url", "sample_key", "clip_index", "start_frame", "num_frames", "fps",
                     "height", "width", "tokenizer", "meta", "tokens", "token_shape"}


def _demo_tokenizer_config():
    import tokenizer_core

    spec = load_job_spec(str(DEMO))
    return tokenizer_core.from_pretrained(spec.tokenizer.checkpoint or spec.tokenizer.name,
                                          init=spec.tokenizer.init).config


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One small run of examples/demo.yaml into a fresh output (shared by the tests below)."""
    out = tmp_path_factory.mktemp("run") / "out"
    home = tmp_path_factory.mktemp("home")  # the embedded Ray must write nothing into it
    proc = run_cli(out, *SMALL, env={"HOME": str(home)})
    assert not list(home.rglob("*auth_token*")), "the embedded run wrote a Ray token into the home folder"
    return out, proc


def test_demo_writes_tokens_for_every_shard(finished):
    """The demo job exits 0, says where the tokens are, and every bundled shard gets a record."""
    out, proc = finished
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"tokens: {out}/tokens/" in proc.stdout
    assert "clips_written=" in proc.stdout
    assert "Token authentication" not in proc.stderr  # the embedded cluster's auth is ours, not a warning
    summary = read_summary(out)
    assert summary["shards_total"] == 4 and summary["shards_done"] == 4 and summary["shards_failed"] == 0
    assert summary["clips_written"] > 0
    assert summary["samples_total"] == summary["samples_ok"] + summary["samples_failed"] == 8
    assert len(manifest_ids(out)) == 4
    assert (out / "_manifest" / "_index.jsonl.gz").exists()  # compacted at the end of the run
    assert summary["actors"] and 0.0 < summary["actors"][0]["busy_fraction"] <= 1.0


def test_parquet_is_plain_and_complete(finished):
    """Token files open with plain pyarrow, hold the INTERFACE columns, and match the summary."""
    out, _ = finished
    files = sorted((out / "tokens").glob("*.parquet"))
    assert len(files) == 4
    tables = [pq.read_table(f) for f in files]
    assert INTERFACE_COLUMNS <= set(tables[0].column_names)
    rows = sum(t.num_rows for t in tables)
    assert rows == read_summary(out)["clips_written"]
    row = next(t for t in tables if t.num_rows).slice(0, 1).to_pylist()[0]
    t, h, w = row["token_shape"]
    cfg = _demo_tokenizer_config()
    assert (t, h, w) == (1 + (9 - 1) // cfg.temporal_compression, 64 // cfg.spatial_compression,
                         64 // cfg.spatial_compression)  # the demo's tokenizer on 9x64x64 clips
    assert len(row["tokens"]) == t * h * w and max(row["tokens"]) < 64000
    assert row["height"] == 64 and row["width"] == 64 and row["num_frames"] == 9
    assert json.loads(row["meta"]) is not None


def test_rerun_does_no_work(finished):
    """Running the same command again skips every finished shard and leaves the outputs untouched."""
    out, _ = finished
    before = {p.name: p.stat().st_mtime_ns for p in (out / "tokens").glob("*.parquet")}
    keys = read_tokens(out)
    proc = run_cli(out, *SMALL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "nothing to do" in proc.stderr
    assert {p.name: p.stat().st_mtime_ns for p in (out / "tokens").glob("*.parquet")} == before
    assert read_tokens(out) == keys
    assert read_summary(out)["shards_done"] == 4


def test_changed_fingerprint_is_refused(finished):
    """Resuming into an output made with other clip settings exits 2 naming the field."""
    out, _ = finished
    before = {p.name: p.stat().st_mtime_ns for p in (out / "tokens").glob("*.parquet")}
    proc = run_cli(out, *SMALL, "clips.num_frames=5")
    assert proc.returncode == 2
    assert "num_frames" in proc.stderr
    assert {p.name: p.stat().st_mtime_ns for p in (out / "tokens").glob("*.parquet")} == before


def test_resume_with_refined_tokens_is_refused(finished):
    """tokenizer.refine_steps changes the tokens: a resume that turns it on exits 2 naming it."""
    out, _ = finished
    proc = run_cli(out, *SMALL, "tokenizer.refine_steps=4")
    assert proc.returncode == 2 and "tokenizer.refine_steps" in proc.stderr


def test_refining_a_continuous_tokenizer_exits_2(tmp_path):
    out = tmp_path / "out"
    proc = run_cli(out, *SMALL, "tokenizer.name=CV4x8x8-tiny", "tokenizer.init=random", "tokenizer.refine_steps=2",
                   timeout=120)
    assert proc.returncode == 2 and "tokenizer.refine_steps" in proc.stderr and "discrete" in proc.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("clips.num_frames=8", "clips.num_frames"),  # not 1 + k*4 for DV4x8x8-tiny
        ("clips.resolution=[60,64]", "clips.resolution"),  # not a multiple of 8
        ("clips.bogus=1", "clips.bogus"),  # unknown key
        ("tokenizer.batch_size=0", "tokenizer.batch_size"),
        ("tokenizer.name=NoSuchTokenizer", "tokenizer.name"),
        ("tokenizer.refine_steps=-1", "tokenizer.refine_steps"),
    ],
)
def test_invalid_spec_exits_2_and_writes_nothing(tmp_path, override, field):
    """An invalid spec exits 2 with one message naming the field; the output is never created."""
    out = tmp_path / "out"
    proc = run_cli(out, *SMALL, override, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert field in proc.stderr
    assert not out.exists()


def test_cuda_without_a_gpu_per_actor_exits_2_naming_both_fields(tmp_path):
    """tokenizer.device=cuda with resources.gpus_per_actor=0 contradicts itself: exit 2, nothing written."""
    out = tmp_path / "out"
    proc = run_cli(out, *SMALL, "tokenizer.device=cuda", "resources.gpus_per_actor=0", timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "tokenizer.device" in proc.stderr and "gpus_per_actor" in proc.stderr
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine's torch has CUDA")
def test_cuda_where_torch_has_none_exits_2_naming_the_build(tmp_path):
    """On an embedded Ray the actors use this torch: a CPU build is refused at start, in one line."""
    out = tmp_path / "out"
    proc = run_cli(out, *SMALL, "tokenizer.device=cuda", timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"torch {torch.__version__} has no CUDA: install a CUDA build of torch" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_output_folder_loads_as_a_dataset(finished, tmp_path, monkeypatch):
    """`datasets.load_dataset(OUTPUT)` yields exactly the token rows: the generated card points
    it at tokens/ (the errors/ table and the bookkeeping files are not data rows)."""
    datasets = pytest.importorskip("datasets")
    out, _ = finished
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    card = (out / "README.md").read_text()
    assert "path: tokens/*.parquet" in card and f"| clips | {read_summary(out)['clips_written']} |" in card
    ds = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "cache"))
    assert ds.num_rows == read_summary(out)["clips_written"]
    assert sorted(ds["key"]) == sorted(read_tokens(out))
