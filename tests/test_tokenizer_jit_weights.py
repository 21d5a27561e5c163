"""Official .jit weights are read as data: the native path never runs TorchScript from the file."""

from __future__ import annotations

import pickle
import shutil
import zipfile

import pytest
import torch

import tokenizer_core
from tokenizer_core.jit_weights import jit_state_dict
from tokenizer_core.official import export_official_jit, load_official


class _Noisy(torch.nn.Module):
    """A module whose file carries code that runs at load: a print, where a hostile one could do more."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.w

    @torch.jit.export
    def __getstate__(self) -> tuple[torch.Tensor, bool]:
        return (self.w, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, bool]) -> None:
        print("code from the file ran")
        self.w = state[0]
        self.training = state[1]


@pytest.fixture(scope="module")
def official_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("official") / "DV4x8x8-tiny"
    tok = tokenizer_core.from_pretrained("DV4x8x8-tiny", init="random")
    export_official_jit(tok, folder, torch.zeros(1, 3, 9, 32, 32), autoencoder=False)
    return folder


def test_tensors_read_as_data_equal_torchscripts_own_state_dict(official_folder):
    for name in ("encoder.jit", "decoder.jit"):
        ours, theirs = jit_state_dict(official_folder / name), torch.jit.load(official_folder / name).state_dict()
        assert ours.keys() == theirs.keys()
        assert all(ours[k].dtype == theirs[k].dtype and torch.equal(ours[k], theirs[k]) for k in theirs)


def test_torch_jit_load_runs_code_from_the_file_and_the_data_reader_does_not(tmp_path, capfd):
    path = tmp_path / "noisy.jit"
    torch.jit.script(_Noisy()).save(str(path))
    torch.jit.load(str(path))
    assert "code from the file ran" in capfd.readouterr().out
    with pytest.raises(ValueError, match="no tensors"):  # its state is a custom tuple, not attributes
        jit_state_dict(path)
    assert "code from the file ran" not in capfd.readouterr().out


class _Payload:
    def __init__(self, source: str, target: str):
        self.source, self.target = source, target

    def __reduce__(self):
        return (shutil.copyfile, (self.source, self.target))


def test_a_data_pkl_naming_any_other_callable_is_refused_before_it_runs(official_folder, tmp_path):
    """A hostile archive's pickle calls shutil.copyfile: refused by name, nothing copied, and
    load_official says how to proceed."""
    folder = tmp_path / "DV4x8x8-tiny"
    folder.mkdir()
    (tmp_path / "secret.txt").write_text("s3cret")
    canary = tmp_path / "stolen.txt"
    payload = pickle.dumps({"x": _Payload(str(tmp_path / "secret.txt"), str(canary))})
    with zipfile.ZipFile(official_folder / "encoder.jit") as src, \
            zipfile.ZipFile(folder / "encoder.jit", "w") as dst:
        for item in src.infolist():
            dst.writestr(item, payload if item.filename.endswith("/data.pkl") else src.read(item))
    shutil.copy(official_folder / "decoder.jit", folder / "decoder.jit")
    with pytest.raises(pickle.UnpicklingError, match="shutil.copyfile"):
        jit_state_dict(folder / "encoder.jit")
    with pytest.raises(ValueError, match="backend='jit'"):
        load_official(folder)
    assert not canary.exists()
    pickle.loads(payload)  # the same bytes through plain pickle: the copy happens
    assert canary.read_text() == "s3cret"


def test_official_weights_kept_as_safetensors_load_back_identical(official_folder, tmp_path):
    """The pure-data copy the threat model recommends: native load, save as .safetensors, reload."""
    tok = tokenizer_core.from_pretrained(official_folder)
    path = tokenizer_core.save_checkpoint(tok, tmp_path / "tiny.safetensors")
    again = tokenizer_core.from_pretrained(str(path))
    assert again.weights_hash == tok.weights_hash and again.config == tok.config
