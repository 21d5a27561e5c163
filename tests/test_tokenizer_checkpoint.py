"""tokenmill checkpoints: save -> load round trips, weights_only format, dtype casts, bundled lookup."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import tokenizer_core as tc
from tokenizer_core import loading

torch.set_num_threads(1)


def _video(t: int = 9) -> torch.Tensor:
    return torch.rand(1, 3, t, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1


def test_checkpoint_is_plain_data_loadable_with_weights_only(tmp_path: Path) -> None:
    tok = tc.from_pretrained("CV4x8x8-tiny", init="random")
    path = tc.save_checkpoint(tok, tmp_path / "ck.pt", extra={"step": 7, "note": "x"})
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == "tokenmill-tokenizer" and payload["version"] == 1
    assert payload["config"]["name"] == "CV4x8x8-tiny" and payload["config"]["latent_channels"] == 16
    assert payload["extra"] == {"step": 7, "note": "x"}
    assert set(payload["state_dict"]) == set(tok.state_dict())
    assert "encoder.conv_in.0.conv3d.weight" in payload["state_dict"]


def test_round_trip_keeps_weights_hash_and_outputs(tmp_path: Path) -> None:
    tok = tc.from_pretrained("CV8x8x8-tiny", init="random")
    with torch.no_grad():  # make the weights differ from the seeded init
        for p in tok.parameters():
            p.add_(0.01)
    path = tc.save_checkpoint(tok, tmp_path / "trained.pt")
    back = tc.from_pretrained(path)
    assert back.weights_hash == tok.weights_hash
    assert back.config == tok.config
    assert torch.equal(back.encode(_video()), tok.encode(_video()))
    config, state, extra = tc.load_checkpoint(path)
    assert config == tok.config and extra == {}
    assert tc.state_dict_hash(state) == tok.weights_hash


def test_fp16_checkpoint_loads_cast_to_requested_dtype(tmp_path: Path) -> None:
    tok = tc.from_pretrained("DV4x8x8-tiny", init="random").half()
    path = tc.save_checkpoint(tok, tmp_path / "half.pt")
    back = tc.from_pretrained(path, dtype="float32")
    assert back.dtype == torch.float32
    for (name, a), (_, b) in zip(tok.state_dict().items(), back.state_dict().items(), strict=True):
        assert torch.equal(a.float(), b), name


def test_checkpoint_for_a_named_preset_must_match_its_architecture(tmp_path: Path) -> None:
    path = tc.save_checkpoint(tc.from_pretrained("DV4x8x8-tiny", init="random"), tmp_path / "dv.pt")
    assert tc.from_pretrained("DV4x8x8", checkpoint=path).config.name == "DV4x8x8-tiny"
    with pytest.raises(ValueError, match="not CV8x8x8"):
        tc.from_pretrained("CV8x8x8", checkpoint=path)


def test_wrong_weights_are_refused_with_key_names(tmp_path: Path) -> None:
    tok = tc.from_pretrained("DV4x8x8-tiny", init="random")
    payload = {"format": "tokenmill-tokenizer", "version": 1, "config": tok.config.to_dict(),
               "state_dict": {k: v for k, v in tok.state_dict().items() if "quant_conv" not in k}, "extra": {}}
    payload["state_dict"]["encoder.extra.weight"] = torch.zeros(1)
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="missing keys.*quant_conv.*unexpected keys.*encoder.extra.weight"):
        tc.from_pretrained(tmp_path / "bad.pt")
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a tokenmill tokenizer checkpoint"):
        tc.from_pretrained(tmp_path / "other.pt")


def test_bundled_name_and_folder_with_model_pt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tok = tc.from_pretrained("DI8x8-tiny", init="random")
    tc.save_checkpoint(tok, tmp_path / "bundled" / "my-model" / "model.pt")
    monkeypatch.setattr(loading, "bundled_dir", lambda: tmp_path / "bundled")
    assert tc.from_pretrained("my-model").weights_hash == tok.weights_hash
    assert tc.from_pretrained(tmp_path / "bundled" / "my-model").weights_hash == tok.weights_hash


def test_config_dict_round_trip_and_unknown_keys() -> None:
    cfg = tc.preset_config("DV8x16x16")
    data = cfg.to_dict()
    assert data["vocab_size"] == 64000 and data["discrete"] is True
    assert tc.TokenizerConfig.from_dict(data) == cfg
    with pytest.raises(ValueError, match="unknown keys"):
        tc.TokenizerConfig.from_dict({**data, "bogus": 1})
    assert tc.preset_config("CV8x8x8").vocab_size is None
    with pytest.raises(KeyError, match="known presets"):
        tc.preset_config("XV1x1")


def test_safetensors_checkpoint_round_trip(tmp_path: Path) -> None:
    """A .safetensors path stores the tensors with config/extra as JSON metadata; no pickle involved."""
    tok = tc.from_pretrained("DV4x8x8-tiny", init="random")
    path = tc.save_checkpoint(tok, tmp_path / "model.safetensors", extra={"steps": 3})
    config, state, extra = tc.load_checkpoint(path)
    assert config == tok.config and extra == {"steps": 3}
    back = tc.from_pretrained(path)
    assert back.weights_hash == tok.weights_hash


def test_unknown_name_lists_bundled_models_and_suggests_close_names():
    with pytest.raises(FileNotFoundError) as info:
        tc.from_pretrained("DV4x8x8-mil")
    message = str(info.value)
    assert "bundled model (DV4x8x8-mill)" in message and "Did you mean 'DV4x8x8-mill'" in message


def test_average_weights_script_writes_the_mean_and_refuses_other_architectures(tmp_path: Path) -> None:
    """scripts/average_weights.py: the export it writes holds the element-wise mean of its inputs,
    loads like any checkpoint and names its sources; inputs of another architecture are refused."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "scripts" / "average_weights.py"
    first = tc.from_pretrained("CV4x8x8-tiny", init="random")
    second = tc.from_pretrained("CV4x8x8-tiny", init="random")
    with torch.no_grad():
        for p in second.parameters():
            p.add_(0.02)
    a, b = tc.save_checkpoint(first, tmp_path / "a.pt"), tc.save_checkpoint(second, tmp_path / "b.pt")
    out = tmp_path / "mean.pt"
    subprocess.run([sys.executable, str(script), str(out), str(a), str(b), "--dtype", "float32"], check=True,
                   capture_output=True)
    mean = tc.from_pretrained(out)
    for name, value in mean.state_dict().items():
        expected = (first.state_dict()[name].float() + second.state_dict()[name].float()) / 2
        assert torch.allclose(value.float(), expected, atol=1e-6), name
    sources = torch.load(out, weights_only=True)["extra"]["averaged_from"]
    assert [s["weights_hash"] for s in sources] == [first.weights_hash, second.weights_hash]

    other = tc.save_checkpoint(tc.from_pretrained("CV8x8x8-tiny", init="random"), tmp_path / "other.pt")
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "bad.pt"), str(a), str(other)],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "config differs" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "bad.pt").exists()


@pytest.mark.parametrize("preset,part", [("DV4x8x8-tiny", "all"), ("DV4x8x8-tiny", "decoder"), ("CI8x8-tiny", "all")])
def test_widen_weights_script_keeps_the_function_and_breaks_the_symmetry(tmp_path: Path, preset: str,
                                                                           part: str) -> None:
    """scripts/widen_weights.py: the widened model (channels repeated, inputs split, zero-sum noise)
    has the wider architecture and computes what the narrow one did: latents and ids equal, the
    reconstruction within float rounding; the noise makes the repeated channels' weights differ."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "scripts" / "widen_weights.py"
    narrow = tc.from_pretrained(preset, init="random")
    with torch.no_grad():  # norms away from their identity init, so a wrong mean/variance would show
        for name, p in narrow.named_parameters():
            if ".norm." in name:
                p.add_(torch.randn_like(p) * 0.3)
    src = tc.save_checkpoint(narrow, tmp_path / "narrow.pt")
    out = tmp_path / "wide.pt"
    subprocess.run([sys.executable, str(script), str(src), str(out), "--part", part, "--noise", "0.05"],
                   check=True, capture_output=True)
    wide = tc.from_pretrained(out)
    cfg, wcfg = narrow.config, wide.config
    if part == "all":
        assert wcfg.channels == 2 * cfg.channels
    else:
        assert wcfg.channels == cfg.channels and wcfg.dec_channels_mult == [2 * m for m in cfg.dec_channels_mult]
    assert sum(p.numel() for p in wide.parameters()) > 1.5 * sum(p.numel() for p in narrow.parameters())

    video = torch.rand(1, 3, 9, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    if not cfg.video:
        video = video[:, :, 0]
    with torch.no_grad():
        a, b = narrow.forward_with_latents(video), wide.forward_with_latents(video)
    assert torch.allclose(a.latents, b.latents, atol=1e-5)
    if a.ids is not None:
        assert torch.equal(a.ids, b.ids)
    assert (a.reconstruction - b.reconstruction).abs().max() < 1e-4

    # a weight that reads repeated channels: its copies differ (noise), and sum to the original
    name = next(n for n, p in wide.state_dict().items()
                if p.ndim >= 4 and p.shape[1] == 2 * narrow.state_dict()[n].shape[1])
    w, v = wide.state_dict()[name], narrow.state_dict()[name]
    assert not torch.equal(w[:, 0::2], w[:, 1::2])
    assert torch.allclose(w[:, 0::2] + w[:, 1::2], v.repeat_interleave(w.shape[0] // v.shape[0], dim=0), atol=1e-6)

    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "missing.pt"), str(tmp_path / "x.pt")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "missing.pt" in proc.stderr and "Traceback" not in proc.stderr


def test_calibrate_colour_script_fits_the_colour_map_and_keeps_the_tokens(tmp_path: Path) -> None:
    """scripts/calibrate_colour.py on real clips: the calibrated model makes the same ids and decodes
    them as the fitted colour map of the old decode; fitted again, the map is the identity (the
    least-squares optimum was reached). --shift-only fits the mean error alone."""
    import subprocess
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from calibrate_colour import fit_colour_map

    from pipeline.tokenizer_tools.evaluate import iter_eval_clips

    root = Path(__file__).resolve().parents[1]
    script = root / "scripts" / "calibrate_colour.py"
    shards = str(root / "data" / "sample" / "shards-00000{0,1}.tar")
    model = tc.from_pretrained("DV4x8x8-tiny", init="random")
    src = tc.save_checkpoint(model, tmp_path / "raw.pt")
    clips = [torch.as_tensor(c.frames) for c, _ in zip(iter_eval_clips(shards, 9, (64, 64)), range(2), strict=False)]
    matrix, offset = fit_colour_map(model, clips)
    assert (matrix - torch.eye(3)).abs().max() > 0.01 and offset.abs().max() > 0.01  # far off: the test can fail

    video = torch.rand(1, 3, 9, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    ids = model.encode(video)
    old = model.decode(ids).double()
    for extra, expect in ((["--shift-only"], (torch.eye(3, dtype=torch.float64), fit_colour_map(model, clips, True)[1])),
                          ([], (matrix, offset))):
        out = tmp_path / f"calibrated{len(extra)}.pt"
        args = ["--shards", shards, "--clips", "2", "--num-frames", "9", "--resolution", "64", "64", *extra]
        proc = subprocess.run([sys.executable, str(script), str(src), str(out), *args], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        calibrated = tc.from_pretrained(out)
        assert torch.equal(calibrated.encode(video), ids)
        mapped = torch.einsum("ij,bjthw->bithw", expect[0], old) + expect[1].view(1, 3, 1, 1, 1)
        assert (calibrated.decode(ids).double() - mapped).abs().max() < 1e-5
        refit_matrix, refit_offset = fit_colour_map(calibrated, clips, shift_only=bool(extra))
        # (a random decoder's colours vary little, so its fit is ill-conditioned: float32 rounding shows)
        assert (refit_matrix - torch.eye(3)).abs().max() < 5e-3 and refit_offset.abs().max() < 5e-3

    bad = subprocess.run([sys.executable, str(script), str(src), str(tmp_path / "x.pt"),
                          "--shards", str(tmp_path / "none-*.tar")], capture_output=True, text=True)
    assert bad.returncode == 2 and "none-" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize("preset", ["CI8x8-tiny", "DV4x8x8-tiny"])
def test_colour_map_folds_exactly_into_the_decoder(preset: str) -> None:
    """fold_colour_map: every decoded pixel becomes matrix @ pixel + offset, images and videos."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from calibrate_colour import fold_colour_map

    model = tc.from_pretrained(preset, init="random")
    g = torch.Generator().manual_seed(1)
    matrix, offset = torch.eye(3) + 0.1 * torch.randn(3, 3, generator=g), 0.2 * torch.randn(3, generator=g)
    video = torch.rand(1, 3, 9, 32, 32, generator=g) * 2 - 1
    if not model.config.video:
        video = video[:, :, 0]
    ids = model.encode(video)
    old = model.decode(ids).double()
    fold_colour_map(model, matrix, offset)
    shape = (1, 3) + (1,) * (old.ndim - 2)
    mapped = torch.einsum("ij,bj...->bi...", matrix.double(), old) + offset.double().view(shape)
    assert (model.decode(ids).double() - mapped).abs().max() < 1e-5
