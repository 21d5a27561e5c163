"""The actor pool follows the cluster: a GPU node that joins mid-job gets a tokenizer actor that
takes batches, and a node that leaves mid-job costs nothing but time (simulated cluster)."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from tests.jobs_helpers import REPO, SMALL, cli_env, read_summary, read_tokens, run_args, run_cli, totals

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """12 shards: the bundled four in three folders (equal names under one pattern root)."""
    root = tmp_path_factory.mktemp("inputs")
    for folder in "abc":
        shutil.copytree(REPO / "data" / "sample", root / folder)
    return root


def _job(inputs) -> list[str]:
    # fake GPUs: torch sees no CUDA, so the actors are told to run on the CPU
    return [*SMALL, f"input.shards={inputs}/*/shards-*.tar", "tokenizer.device=cpu", "resources.max_actors=2"]


def _busy_actor_on(client, node_id: str | None, timeout: float) -> dict:
    """Stats of a job's tokenizer actor (on `node_id`, if given) once it has encoded a batch."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for entry in client.util.list_named_actors(all_namespaces=True):
            if not entry["name"].startswith("tokenizer-") or entry["namespace"] != "tokenmill":
                continue
            try:
                stats = client.get(client.get_actor(entry["name"], namespace="tokenmill").stats.remote(), timeout=5)
            except Exception:  # noqa: BLE001 - still starting, or on a node being removed
                continue
            if stats["batches"] >= 1 and node_id in (None, stats["node_id"]):
                return stats
        time.sleep(0.5)
    raise AssertionError(f"no tokenizer actor {'on ' + node_id if node_id else ''} encoded a batch")


@pytest.mark.xfail(reason="racy on an idle machine: the job can finish before the joining node's actor takes "
                          "a batch (seen at the last merge); needs a job paced by the test. Open in issue 16.",
                   strict=False)
def test_pool_grows_onto_a_joining_node_and_survives_losing_one(ray_elastic, inputs, tmp_path):
    import ray

    reference = tmp_path / "reference"
    clean = run_cli(reference, *_job(inputs), address=ray_elastic.address, timeout=600)
    assert clean.returncode == 0, clean.stderr[-3000:]

    out = tmp_path / "out"
    ray.init(address=ray_elastic.address, namespace="tokenmill", log_to_driver=False)
    log = (tmp_path / "run.log").open("w+")  # a file, not a pipe: a full pipe would stall the job
    proc = subprocess.Popen(run_args(out, *_job(inputs), address=ray_elastic.address), cwd=REPO,
                            env=cli_env(), stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        first = _busy_actor_on(ray, None, timeout=180)
        added = ray_elastic.add_gpu_node()
        _busy_actor_on(ray, added.node_id, timeout=240)
        assert proc.poll() is None, "the job ended before the new actor took a batch; the test proves nothing"
        ray_elastic.remove(next(n for n in ray_elastic.workers if n.node_id == first["node_id"]))
        proc.wait(timeout=600)
    finally:
        ray.shutdown()
        if proc.poll() is None:
            proc.kill()
        log.seek(0)
        err = log.read()
        log.close()
    assert proc.returncode == 0, err[-3000:]
    summary = read_summary(out)
    on_new_node = [a for a in summary["actors"] if a.get("node_id") == added.node_id]
    assert on_new_node and on_new_node[0]["batches"] > 0, summary["actors"]
    assert summary["placement"]["actors_started"] == 2
    assert read_tokens(out) == read_tokens(reference)
    assert totals(summary) == totals(read_summary(reference))
