"""Hub repo ids in `from_pretrained`, through the real huggingface_hub client and a stand-in Hub.

The client reads HF_ENDPOINT / HF_HOME / HF_HUB_OFFLINE / HF_TOKEN when it is imported, so
every load runs in a fresh process with that environment, as a user's would.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from schemas.hubref import HubRef, hub_ref_for, parse_hub_ref
from schemas.jobspec import parse_job_spec
from tests.fixtures.hub import StandInHub, hub_env
from tests.tokenizer_support import official_files
from tokenizer_core import hub, preset_config
from tokenizer_core.variants import _parse_hint

REPO = "acme/tiny-DV4x8x8"
_LOAD = """
import json, sys
import tokenizer_core
for ref in sys.argv[1:]:
    try:
        tok = tokenizer_core.from_pretrained(ref)
    except Exception as exc:
        print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
    else:
        print(json.dumps({"hash": tok.weights_hash, "name": tok.config.name}))
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, bytes]:
    return official_files("DV4x8x8-tiny", tmp_path_factory.mktemp("official"))


@pytest.fixture(scope="module")
def local_hash(files, tmp_path_factory) -> str:
    """The weights hash of the same files loaded from a local folder."""
    import tokenizer_core

    folder = tmp_path_factory.mktemp("local")
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return str(tokenizer_core.from_pretrained(folder).weights_hash)


def _start(hub_: StandInHub, home: Path, *refs: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _LOAD, *refs], env=hub_env(hub_, home, **env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _results(proc: subprocess.Popen) -> list[dict]:
    """One dict per ref: {"hash", "name"} or {"error", "message"}."""
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def _result(proc: subprocess.Popen) -> dict:
    return _results(proc)[-1]


def _load(hub_: StandInHub, home: Path, ref: str = REPO, **env: str) -> dict:
    return _result(_start(hub_, home, ref, **env))


def test_hub_ref_syntax_keeps_paths_apart_from_repo_ids(tmp_path: Path) -> None:
    """owner/name[@rev] is a repo id; an existing path, ./x, /x, ~x and file names stay paths; hf:// is the Hub."""
    assert parse_hub_ref("nvidia/Cosmos-0.1-Tokenizer-DV8x16x16") == HubRef("nvidia/Cosmos-0.1-Tokenizer-DV8x16x16")
    assert parse_hub_ref("acme/x@refs/pr/1") == HubRef("acme/x", "refs/pr/1")
    assert HubRef("acme/x", "a" * 40).pinned and not HubRef("acme/x", "main").pinned
    assert parse_hub_ref(f"acme/x@{'a' * 40}") == HubRef("acme/x", "a" * 40)
    for path in ("./acme/x", "/acme/x", "~/x", "DV8x16x16", "a/b/c", "ckpts/model.pt", "acme/x.jit", "a/..b"):
        assert parse_hub_ref(path) is None, path
    assert parse_hub_ref("hf://acme/model.pt") == HubRef("acme/model.pt")
    (tmp_path / "acme" / "x").mkdir(parents=True)
    assert hub_ref_for("acme/x", tmp_path) is None  # the local folder wins
    assert hub_ref_for("hf://acme/x", tmp_path) == HubRef("acme/x")
    assert hub_ref_for("acme/y", tmp_path) == HubRef("acme/y")
    data = {"input": {"shards": "s.tar"}, "output": {"uri": "out"},
            "tokenizer": {"name": "DV8x16x16", "checkpoint": "acme/y@v2"}}
    assert parse_job_spec(data, str(tmp_path)).tokenizer.checkpoint == "acme/y@v2"
    data["tokenizer"]["checkpoint"] = "acme/x"
    assert parse_job_spec(data, str(tmp_path)).tokenizer.checkpoint == str(tmp_path / "acme" / "x")


def test_known_cosmos_repos_map_to_presets_of_their_factors() -> None:
    """Every repo in the table names a preset whose family and factors its repo name spells."""
    assert len(hub.KNOWN_REPOS) == 20
    for repo_id, (preset, release) in hub.KNOWN_REPOS.items():
        config = preset_config(preset)
        family, t, s = _parse_hint(repo_id)  # type: ignore[misc]
        assert (config.family, config.temporal_compression, config.spatial_compression) == (family, t, s), repo_id
        assert release and hub.preset_hint(repo_id) == preset
    assert hub.preset_hint("someone/my-DV8x16x16-finetune") == "DV8x16x16"
    assert hub.preset_hint("someone/tokenizer") is None


def test_only_the_files_loading_needs_are_chosen() -> None:
    """encoder+decoder skip the redundant autoencoder.jit; autoencoder alone is enough; else nothing."""
    full = ["README.md", "autoencoder.jit", "config.json", "decoder.jit", "encoder.jit", "model.pt"]
    assert hub.tokenizer_files(full) == ["encoder.jit", "decoder.jit", "config.json"]
    assert hub.tokenizer_files(["autoencoder.jit", "encoder.jit"]) == ["encoder.jit", "autoencoder.jit"]
    assert hub.tokenizer_files(["README.md", "model.safetensors", "sub/encoder.jit", "sub/decoder.jit"]) == []


def test_repo_id_loads_the_same_weights_and_works_offline_from_the_cache(
        stand_in_hub: StandInHub, files, local_hash, tmp_path: Path) -> None:
    """A download gives the local folder's weights, fetching only encoder, decoder and config; a
    pinned cached commit then needs no request, and offline the cache serves the repo with no
    request, while a repo it lacks fails saying HF_HUB_OFFLINE is why."""
    sha = stand_in_hub.publish(REPO, {**files, "README.md": b"# tiny"})
    home = tmp_path / "hf"
    online = _results(_start(stand_in_hub, home, REPO, f"{REPO}@{sha}"))
    assert online == [{"hash": local_hash, "name": "DV4x8x8-tiny"}] * 2
    assert stand_in_hub.downloads() == {f"{REPO}/encoder.jit": 1, f"{REPO}/decoder.jit": 1, f"{REPO}/config.json": 1}
    assert not [path for _, path in stand_in_hub.requests() if f"/revision/{sha}" in path]
    assert (home / "hub" / "models--acme--tiny-DV4x8x8" / "snapshots" / sha / "encoder.jit").is_file()

    before = len(stand_in_hub.requests())
    warm, pinned, absent = _results(_start(stand_in_hub, home, REPO, f"{REPO}@{sha}", "acme/other",
                                           HF_HUB_OFFLINE="1"))
    assert warm["hash"] == pinned["hash"] == local_hash
    assert absent["error"] == "HubError" and "HF_HUB_OFFLINE" in absent["message"]
    assert len(stand_in_hub.requests()) == before


def test_two_processes_on_one_node_download_each_file_once(stand_in_hub: StandInHub, files, local_hash,
                                                           tmp_path: Path) -> None:
    """Two loaders started together on a cold shared cache: the client's file locks make one download."""
    stand_in_hub.publish(REPO, files)
    stand_in_hub.delay_s = 1.0  # both are inside the download at once
    home = tmp_path / "hf"
    procs = [_start(stand_in_hub, home, REPO) for _ in range(2)]
    assert [_result(p)["hash"] for p in procs] == [local_hash, local_hash]
    assert set(stand_in_hub.downloads().values()) == {1}
    assert len(stand_in_hub.downloads()) == 3
    heads = [path for method, path in stand_in_hub.requests() if method == "HEAD"]
    assert len(heads) == 6  # both asked (so both were really there), one fetched


def test_gated_repo_needs_the_token(stand_in_hub: StandInHub, files, local_hash, tmp_path: Path) -> None:
    """Without HF_TOKEN a gated repo fails saying how to get access; with it, it loads."""
    stand_in_hub.publish(REPO, files, gated=True)
    refused = _load(stand_in_hub, tmp_path / "a")
    assert refused["error"] == "HubError" and "gated" in refused["message"] and "HF_TOKEN" in refused["message"]
    assert stand_in_hub.token and stand_in_hub.token not in refused["message"]
    assert _load(stand_in_hub, tmp_path / "b", HF_TOKEN=str(stand_in_hub.token))["hash"] == local_hash


def test_missing_repo_revision_and_repo_without_tokenizer_files_are_named(stand_in_hub: StandInHub,
                                                                          tmp_path: Path) -> None:
    """Each failure is one HubError sentence naming the repo and what is wrong."""
    stand_in_hub.publish("acme/text-model", {"README.md": b"#", "model.safetensors": b"\0" * 8})
    proc = _start(stand_in_hub, tmp_path / "hf", "acme/nothing", "acme/text-model", "acme/text-model@v9")
    missing, no_files, no_rev = (r["message"] for r in _results(proc))
    assert "no repository acme/nothing" in missing
    assert "holds no tokenizer files" in no_files and "model.safetensors" in no_files
    assert "no revision 'v9'" in no_rev
