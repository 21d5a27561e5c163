"""A job whose tokenizer is a preset plus official-format .jit files (tokenizer.checkpoint)."""

from __future__ import annotations

import pytest
import torch

import tokenizer_core
from tests.jobs_helpers import SMALL, read_tokens, run_cli
from tokenizer_core.official import export_official_jit


@pytest.fixture(scope="module")
def official_folder(tmp_path_factory):
    """The bundled model's weights traced into encoder.jit/decoder.jit the way NVIDIA releases them."""
    folder = tmp_path_factory.mktemp("official")
    tok = tokenizer_core.from_pretrained("DV4x8x8-mill")
    export_official_jit(tok, folder, torch.zeros(1, 3, 9, 64, 64))
    return folder


def test_official_checkpoint_gives_the_same_tokens_as_the_same_weights(tmp_path, official_folder):
    """Weights reach the actors through tokenizer.checkpoint: ids equal those of the native model."""
    native = run_cli(tmp_path / "native", *SMALL)
    assert native.returncode == 0, native.stderr[-3000:]
    official = run_cli(tmp_path / "official", *SMALL, "tokenizer.name=DV4x8x8",
                       f"tokenizer.checkpoint={official_folder}")
    assert official.returncode == 0, official.stderr[-3000:]
    expected = read_tokens(tmp_path / "native")
    assert expected and read_tokens(tmp_path / "official") == expected
    assert len({ids for ids, _ in expected.values()}) > 1  # real, varied tokens, not a constant


def test_checkpoint_of_another_preset_is_refused(tmp_path, official_folder):
    """A DV4x8x8 checkpoint under tokenizer.name DV8x16x16 is a spec error, and nothing is written."""
    out = tmp_path / "out"
    proc = run_cli(out, *SMALL, "tokenizer.name=DV8x16x16", f"tokenizer.checkpoint={official_folder}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "tokenizer.checkpoint" in proc.stderr
    assert not (out / "tokens").exists()
