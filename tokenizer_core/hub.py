"""Tokenizers from the Hugging Face Hub: `owner/name[@revision]` -> a local folder of official files.

    snap = fetch(HubRef("nvidia/Cosmos-0.1-Tokenizer-DV8x16x16"))
    snap.folder   # <HF_HUB_CACHE>/models--nvidia--Cosmos-0.1-Tokenizer-DV8x16x16/snapshots/<commit>
    snap.commit   # the commit the revision resolved to; snap.pinned is the ref pinned to it

Everything goes through `huggingface_hub`, the maintained client, configured the way it always
is: `HF_HOME` / `HF_HUB_CACHE` (the cache), `HF_ENDPOINT` (a mirror), `HF_HUB_OFFLINE=1` (cache
only, no request), `HF_TOKEN` or `hf auth login` (gated and private repos). The client reads
these when it is imported, so they belong in the environment of the process (every node).
tokenmill never reads, passes or logs the token.

Once per node: the client downloads each file into the cache under a file lock
(`<cache>/.locks/`) and renames it into place whole, so processes sharing a cache (the actors
of one node) download a file once; the others wait for the lock and reuse it. A fetch pinned to
a commit whose files are cached makes no request at all.

Only what loading needs is fetched: `encoder.jit` and `decoder.jit` when the repo has both
(`autoencoder.jit` holds the same weights again), else `autoencoder.jit`; and `config.json`.
Releases' native `model.pt` files (an official format, not a tokenmill checkpoint) are skipped.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.hubref import HubRef

log = logging.getLogger(__name__)

OFFICIAL_FILES = ("encoder.jit", "decoder.jit", "autoencoder.jit")

# Cosmos tokenizer repos on the Hub -> (preset, release). The variant detector reads the
# architecture from the weights; the preset gives the compression factors, which releases
# with kept sampler convs (0.1, 1.0) do not reveal, and is checked against the others.
_RELEASES = {
    "Cosmos Tokenizer 0.1 (NVIDIA/Cosmos-Tokenizer)": (
        "nvidia/Cosmos-0.1-Tokenizer-{}",
        ["CV4x8x8", "CV8x8x8", "CV8x16x16", "DV4x8x8", "DV8x8x8", "DV8x16x16", "CI8x8", "CI16x16", "DI8x8",
         "DI16x16"]),
    "Cosmos 1.0 (NVIDIA/Cosmos)": ("nvidia/Cosmos-1.0-Tokenizer-{}", ["CV8x8x8", "DV8x16x16"]),
    "Cosmos-Predict1 (nvidia-cosmos/cosmos-predict1)": (
        "nvidia/Cosmos-Tokenize1-{}",
        ["CV8x8x8-720p", "DV8x16x16-720p", "CV4x8x8-360p", "DV4x8x8-360p", "CI8x8-360p", "CI16x16-360p",
         "DI8x8-360p", "DI16x16-360p"]),
}
KNOWN_REPOS: dict[str, tuple[str, str]] = {
    pattern.format(variant): (variant.split("-")[0], release)
    for release, (pattern, variants) in _RELEASES.items() for variant in variants
}
_FACTORS = re.compile(r"([CD][VI])(\d+)x(\d+)(?:x(\d+))?")


class HubError(ValueError):
    """A Hub reference that cannot be served: no such repo or revision, gated without access,
    no tokenizer files, or not cached while offline / the Hub cannot be reached."""


@dataclass(frozen=True)
class HubSnapshot:
    ref: HubRef  # as asked for
    commit: str  # what its revision resolved to
    folder: Path  # the cached snapshot holding the fetched files
    hint: str | None  # preset name that tells the variant detector the compression factors

    @property
    def pinned(self) -> HubRef:
        return self.ref.at(self.commit)


def preset_hint(repo_id: str) -> str | None:
    """The preset a repo's weights should be: from the known-repo table, else from the name."""
    if repo_id in KNOWN_REPOS:
        return KNOWN_REPOS[repo_id][0]
    match = _FACTORS.search(repo_id.split("/", 1)[-1])
    return match.group(0) if match else None


def tokenizer_files(names: list[str]) -> list[str]:
    """The files to fetch from a repo holding `names` (top level only); [] if it has none."""
    top = {n for n in names if "/" not in n}
    if {"encoder.jit", "decoder.jit"} <= top:
        chosen = ["encoder.jit", "decoder.jit"]
    elif "autoencoder.jit" in top:
        chosen = [f for f in OFFICIAL_FILES if f in top]
    else:
        return []
    return chosen + (["config.json"] if "config.json" in top else [])


def _client() -> Any:
    try:
        import huggingface_hub
        import huggingface_hub.constants
        import huggingface_hub.errors  # noqa: F401 - submodules are not loaded with the package
    except ImportError:
        raise HubError("Hub repo ids need the huggingface_hub package (pip install huggingface_hub)") from None
    return huggingface_hub


def _explain(hf: Any, ref: HubRef, exc: BaseException) -> str:
    """One sentence for a client error (its messages carry URLs, never the token)."""
    errors, endpoint = hf.errors, hf.constants.ENDPOINT
    if isinstance(exc, errors.GatedRepoError):
        return (f"{ref.repo_id} is gated: accept its terms on {endpoint}/{ref.repo_id} with your account, then "
                "set HF_TOKEN (or run `hf auth login`) on every node")
    if isinstance(exc, errors.RevisionNotFoundError):
        return f"{ref.repo_id} has no revision {ref.revision!r} on {endpoint}"
    if isinstance(exc, errors.RepositoryNotFoundError):
        return f"no repository {ref.repo_id} on {endpoint} (if it is private, set HF_TOKEN)"
    if isinstance(exc, errors.HfHubHTTPError):
        status = getattr(exc.response, "status_code", "?")
        return f"{endpoint} answered HTTP {status} for {ref}: {str(exc).splitlines()[0]}"
    if isinstance(exc, errors.LocalEntryNotFoundError):
        return (f"{ref} is not in the local cache ({hf.constants.HF_HUB_CACHE}) and {endpoint} cannot be reached "
                f"or HF_HUB_OFFLINE is set: {str(exc).splitlines()[0]}")
    return f"cannot reach {endpoint} for {ref}: {type(exc).__name__}: {exc}"


def _cached_listing(hf: Any, ref: HubRef) -> list[str] | None:
    try:
        return [f.path for f in hf.get_cached_repo_tree(ref.repo_id, revision=ref.revision)]
    except hf.errors.CachedRepoTreeNotFoundError:
        return None


def _listing(hf: Any, ref: HubRef) -> list[str]:
    """The repo's file names at `ref`: from the cache for a pinned commit or offline, else the Hub."""
    offline = hf.constants.is_offline_mode()
    if offline or ref.pinned:
        cached = _cached_listing(hf, ref)
        if cached is not None:
            return cached
        if offline:
            raise HubError(f"{ref} is not in the local cache ({hf.constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE is "
                           "set: fetch it once with network access, or point HF_HOME at a cache that holds it")
    try:
        info = hf.HfApi().model_info(ref.repo_id, revision=ref.revision)
    except hf.errors.HfHubHTTPError as exc:
        raise HubError(_explain(hf, ref, exc)) from None
    except Exception as exc:  # noqa: BLE001 - the HTTP library's transport errors: fall back to the cache
        cached = _cached_listing(hf, ref)
        if cached is None:
            raise HubError(_explain(hf, ref, exc)) from None
        log.warning("%s: %s; using the cached copy", ref, _explain(hf, ref, exc))
        return cached
    return [s.rfilename for s in info.siblings or []]


def fetch(ref: HubRef) -> HubSnapshot:
    """Download (or find in the cache) the tokenizer files of `ref`; raises HubError."""
    hf = _client()
    names = _listing(hf, ref)
    chosen = tokenizer_files(names)
    if not chosen:
        listed = ", ".join(sorted(names)[:12]) or "no files"
        raise HubError(f"{ref} holds no tokenizer files: expected encoder.jit and decoder.jit (or autoencoder.jit) "
                       f"at its top level; it has {listed}")
    try:
        folder = Path(hf.snapshot_download(ref.repo_id, revision=ref.revision, allow_patterns=chosen))
    except (hf.errors.HfHubHTTPError, hf.errors.LocalEntryNotFoundError) as exc:
        raise HubError(_explain(hf, ref, exc)) from None
    missing = [f for f in chosen if not (folder / f).is_file()]
    if missing:  # the revision moved between listing and download
        raise HubError(f"{ref}: {', '.join(missing)} vanished from the repo while it was fetched; try again")
    snap = HubSnapshot(ref, folder.name, folder, preset_hint(ref.repo_id))
    log.info("%s: commit %s in %s", ref, snap.commit, folder)
    return snap
