"""The CLI starts fast: `--help` must not import torch, Ray, pyarrow or pydantic."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COMMANDS = ["run", "submit", "status", "ls", "make-shards", "preview", "eval", "train-tokenizer", "spec-schema"]


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_works(command):
    argv = [sys.executable, "-m", "jobs.cli"] + ([command] if command else []) + ["--help"]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "usage: tokenmill" in proc.stdout
    if command:  # every subcommand says what it does, beyond its one-line summary
        description = proc.stdout.split("\n\n")[1]
        assert len(description.split()) >= 12, description


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"]])
def test_help_imports_no_heavy_modules(argv):
    # Start-up time on a loaded 2-core machine is noisy; what keeps `--help` under two seconds
    # is that nothing heavy is imported, which is deterministic, so that is what we check.
    code = (
        "import sys, contextlib, io\n"
        "from jobs.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n"
        f"        main({argv!r})\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = [m for m in ('torch', 'ray', 'pyarrow', 'av', 'decord', 'numpy', 'pydantic') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""


def test_unknown_command_is_usage_error():
    proc = subprocess.run([sys.executable, "-m", "jobs.cli", "frobnicate"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2
