"""The actor pool follows the cluster: a GPU node that joins mid-job gets a tokenizer actor that
takes batches, and a node that leaves mid-job costs nothing but time (simulated cluster)."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from tests.fixtures.faulty_http import FaultyServer
from tests.jobs_helpers import REPO, SMALL, cli_env, read_summary, read_tokens, run_args, run_cli, totals

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """12 shards over HTTP: the bundled four in folders a, b and c; the test holds back b and c
    (their GETs wait) to pace the job against the cluster's changes."""
    root = tmp_path_factory.mktemp("inputs")
    for folder in "abc":
        shutil.copytree(REPO / "data" / "sample", root / folder)
    server = FaultyServer(root=root)
    yield server
    server.close()


def _job(server) -> list[str]:
    # fake GPUs: torch sees no CUDA, so the actors are told to run on the CPU
    return [*SMALL, f"input.shards={server.url}/{{a,b,c}}/shards-{{000000..000003}}.tar", "tokenizer.device=cpu",
            "resources.max_actors=2"]


def _actor_on(client, node_id: str | None, timeout: float, batches: int) -> dict:
    """Stats of a job's tokenizer actor (on `node_id`, if given) once it has encoded `batches`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for entry in client.util.list_named_actors(all_namespaces=True):
            if not entry["name"].startswith("tokenizer-") or entry["namespace"] != "tokenmill":
                continue
            try:
                stats = client.get(client.get_actor(entry["name"], namespace="tokenmill").stats.remote(), timeout=5)
            except Exception:  # noqa: BLE001 - still starting, or on a node being removed
                continue
            if stats["batches"] >= batches and node_id in (None, stats["node_id"]):
                return stats
        time.sleep(0.5)
    raise AssertionError(f"no tokenizer actor {'on ' + node_id if node_id else ''} encoded {batches} batches")


def _logged(path, text: str, timeout: float) -> None:
    deadline = time.time() + timeout
    while text not in path.read_text():
        assert time.time() < deadline, f"the job never logged {text!r}"
        time.sleep(0.5)


def test_pool_grows_onto_a_joining_node_and_survives_losing_one(ray_elastic, inputs, tmp_path):
    import ray

    reference = tmp_path / "reference"
    clean = run_cli(reference, *_job(inputs), address=ray_elastic.address, timeout=600)
    assert clean.returncode == 0, clean.stderr[-3000:]

    out = tmp_path / "out"
    inputs.hold("/b/")
    inputs.hold("/c/")
    ray.init(address=ray_elastic.address, namespace="tokenmill", log_to_driver=False)
    log = (tmp_path / "run.log").open("w+")  # a file, not a pipe: a full pipe would stall the job
    proc = subprocess.Popen(run_args(out, *_job(inputs), address=ray_elastic.address), cwd=REPO,
                            env=cli_env(), stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        first = _actor_on(ray, None, timeout=180, batches=1)  # busy with folder a
        added = ray_elastic.add_gpu_node()
        _logged(tmp_path / "run.log", "roster 2: 2 tokenizer actors on 2 nodes", timeout=240)  # the pool grew
        inputs.release("/b/")  # folder b's shard tasks, some on the new node, now feed both actors
        _actor_on(ray, added.node_id, timeout=240, batches=1)  # ... and the new actor takes batches
        assert proc.poll() is None, "folder c is still held back: the job cannot have ended"
        ray_elastic.remove(next(n for n in ray_elastic.workers if n.node_id == first["node_id"]))
        inputs.release("/c/")  # what was running on the lost node is redone on the one left
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
