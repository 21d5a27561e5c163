"""Hugging Face Hub references: how a spec value or a `from_pretrained` argument names a Hub repo.

    nvidia/Cosmos-0.1-Tokenizer-DV8x16x16            the default branch, resolved when loaded
    nvidia/Cosmos-0.1-Tokenizer-DV8x16x16@v1.0       a branch or tag
    nvidia/Cosmos-0.1-Tokenizer-DV8x16x16@<40 hex>   one commit (pinned: never moves)
    hf://nvidia/Cosmos-0.1-Tokenizer-DV8x16x16       always the Hub, even if a local path has that name

Rule for a value that could be a path: an existing local path always wins. Otherwise a value of
the form `owner/name[@revision]` is a Hub repo id: exactly one `/` before any `@`, owner and name
of letters, digits, `.`, `_` and `-` (starting and ending with a letter or digit), nothing
starting with `.`, `/` or `~`, and no checkpoint file suffix (`ckpts/model.pt` stays a path).
Only syntax here: nothing is looked up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

HUB_SCHEME = "hf://"
_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
_REF = re.compile(rf"(?P<repo>{_PART}/{_PART})(?:@(?P<revision>[A-Za-z0-9._-][A-Za-z0-9._/-]{{0,199}}))?")
_COMMIT = re.compile(r"[0-9a-f]{40}")
_FILE_SUFFIXES = (".pt", ".pth", ".safetensors", ".jit", ".ckpt", ".bin")


@dataclass(frozen=True)
class HubRef:
    repo_id: str  # owner/name
    revision: str | None = None  # a branch, tag or commit; None = the repo's default branch

    def __str__(self) -> str:
        return f"{self.repo_id}@{self.revision}" if self.revision else self.repo_id

    @property
    def pinned(self) -> bool:
        """True when the revision is a full commit hash, which cannot move."""
        return bool(self.revision and _COMMIT.fullmatch(self.revision))

    def at(self, commit: str) -> HubRef:
        return HubRef(self.repo_id, commit)


def parse_hub_ref(text: str) -> HubRef | None:
    """The Hub reference `text` spells, or None (syntax only; see the module docstring)."""
    explicit = text.startswith(HUB_SCHEME)
    body = text.removeprefix(HUB_SCHEME)
    match = _REF.fullmatch(body)
    if match is None or ".." in match["repo"] or "--" in match["repo"]:
        return None
    if not explicit and match["repo"].lower().endswith(_FILE_SUFFIXES):
        return None
    return HubRef(match["repo"], match["revision"])


def hub_ref_for(text: str, base: str | Path | None = None) -> HubRef | None:
    """`text` as a Hub reference, unless it names an existing local path (relative to `base`,
    default the working directory) — and `hf://...` is always the Hub."""
    if not text.startswith(HUB_SCHEME) and (Path(base or ".") / Path(text).expanduser()).exists():
        return None
    return parse_hub_ref(text)
