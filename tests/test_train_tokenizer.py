"""Training on real clips: the loss goes down, checkpoints load, and a resume is exact."""

from __future__ import annotations

import itertools
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import yaml

import tokenizer_core
from jobs.cli import main
from pipeline.tokenizer_tools.train_tokenizer import run_training
from schemas.config import SpecError, from_dict
from schemas.training import TrainConfig, load_train_config

SHARD = "shards-000001.tar"  # carphone (176x144) + bikes (640x272): cheap to decode


def _write_config(folder: Path, shard: Path, **changes) -> Path:
    config = {
        "data": {"shards": str(shard), "num_frames": 9, "resolution": [64, 64], "crop": [32, 32],
                 "stride": 8, "max_clips_per_video": 3},
        "model": {"name": "DV4x8x8-tiny", "init": "random"},
        "output_dir": str(folder / "run"),
        "steps": 30,
        "batch_size": 2,
        "optim": {"lr": 3e-3, "warmup_steps": 3, "ema_decay": 0.9},
        "checkpoint_every": 10,
        "log_every": 1,
        "threads": 1,
    }
    for key, value in changes.items():
        node = config
        *parents, last = key.split(".")
        for p in parents:
            node = node[p]
        node[last] = value
    path = folder / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _log(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def shard(sample_shards) -> Path:
    return next(s for s in sample_shards if s.name == SHARD)


def test_loss_goes_down_on_real_clips(tmp_path, shard):
    """30 steps of a tiny DV tokenizer on real video: the late loss is clearly below the start."""
    cfg = load_train_config(str(_write_config(tmp_path, shard)))
    run_training(cfg)
    losses = [r["loss"] for r in _log(Path(cfg.output_dir))]
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:3]) / 3


def test_checkpoint_is_a_tokenmill_model_and_export_is_fp16(tmp_path, shard):
    export = tmp_path / "bundled" / "mine" / "model.pt"
    path = _write_config(tmp_path, shard, steps=4, **{"model.save_as": "mine"})
    assert main(["train-tokenizer", str(path), "--set", f"export.path={export}"]) == 0
    last = tmp_path / "run" / "last.pt"
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    assert ckpt["format"] == "tokenmill-tokenizer" and ckpt["training"]["step"] == 4
    assert ckpt["config"]["name"] == "mine"
    exported = torch.load(export, map_location="cpu", weights_only=True)
    assert "training" not in exported
    assert {v.dtype for v in exported["state_dict"].values() if v.is_floating_point()} == {torch.float16}
    tok = tokenizer_core.from_pretrained(str(export))
    ids = tok.encode(torch.zeros(1, 3, 9, 32, 32))
    assert ids.shape == (1, 3, 4, 4)
    # the exported weights are the EMA weights of the last checkpoint, rounded to fp16
    ema = ckpt["state_dict"]["quant_conv.conv3d.weight"]
    assert torch.allclose(exported["state_dict"]["quant_conv.conv3d.weight"].float(), ema, atol=1e-3)


def test_resume_continues_with_identical_next_steps(tmp_path, shard):
    """Killed after the step-10 checkpoint, the same command continues at step 11 and reproduces
    steps 11..15 of the uninterrupted run exactly; the log keeps one record per step."""
    cfg = load_train_config(str(_write_config(tmp_path, shard, steps=15, checkpoint_every=10)))
    run_training(cfg)
    run_dir = Path(cfg.output_dir)
    reference = {r["step"]: r["loss"] for r in _log(run_dir)}

    # the state a kill between steps 10 and 15 leaves behind: last.pt is the step-10 checkpoint
    shutil.copy(run_dir / "step-0000010.pt", run_dir / "last.pt")
    trainer = run_training(cfg)
    assert trainer.step == 15
    records = _log(run_dir)
    assert [r["step"] for r in records] == list(range(1, 16))
    for r in records[10:]:
        assert r["loss"] == pytest.approx(reference[r["step"]], rel=1e-6, abs=1e-7), r["step"]


def test_max_minutes_stops_early_with_a_final_checkpoint_and_export(tmp_path, shard):
    """Out of time after the first step: last.pt and the export hold that step, no numbered
    checkpoint is made off the checkpoint_every grid, and the same command continues the run."""
    export = tmp_path / "exported.pt"
    cfg = load_train_config(str(_write_config(tmp_path, shard, steps=6, checkpoint_every=4, max_minutes=1e-6)),
                            [f"export.path={export}"])
    assert run_training(cfg).step == 1
    run_dir = Path(cfg.output_dir)
    assert torch.load(run_dir / "last.pt", weights_only=True)["training"]["step"] == 1
    assert torch.load(export, weights_only=True)["extra"]["steps"] == 1
    assert not list(run_dir.glob("step-*.pt"))
    assert run_training(cfg.model_copy(update={"max_minutes": None})).step == 6
    assert sorted(p.name for p in run_dir.glob("step-*.pt")) == ["step-0000004.pt"]


def test_resume_refuses_a_different_architecture(tmp_path, shard):
    cfg = load_train_config(str(_write_config(tmp_path, shard, steps=2)))
    run_training(cfg)
    other = load_train_config(str(_write_config(tmp_path, shard, steps=4, **{"model.overrides": {"channels": 8}})))
    with pytest.raises(SpecError, match="different model config"):
        run_training(other)


def test_config_errors_name_the_field(tmp_path, shard):
    path = _write_config(tmp_path, shard, **{"data.crop": [128, 128]})
    with pytest.raises(SpecError, match=r"^data\.crop"):
        load_train_config(str(path))
    path = _write_config(tmp_path, shard, **{"optim.warmup": 3})
    assert main(["train-tokenizer", str(path)]) == 2


def test_loss_terms_are_weighted_sums_of_their_definitions():
    """Each enabled term is its textbook value on a known error, and the total is the weighted sum."""
    from tokenizer_core.losses import LossWeights, reconstruction_loss

    video = torch.zeros(1, 3, 2, 16, 16)
    recon = torch.full_like(video, 0.5)
    recon[:, :, 1] = -0.5  # frame 1 errs the other way: |error| 0.5 everywhere, squared 0.25
    total, parts = reconstruction_loss(recon, video, LossWeights(l1=1.0, mse=4.0, ssim=0.0, temporal=0.5))
    assert parts["l1"] == pytest.approx(0.5) and parts["mse"] == pytest.approx(0.25)
    assert parts["temporal"] == pytest.approx(1.0)  # recon's frame step is -1, the video's 0
    assert "ssim" not in parts
    assert float(total) == pytest.approx(0.5 + 4.0 * 0.25 + 0.5 * 1.0)
    _, without = reconstruction_loss(recon, video, LossWeights())
    assert "mse" not in without  # off by default: the shipped recipe's loss is unchanged


def test_bundled_recipe_writes_the_shipped_file_and_the_shipped_weights_are_its_result():
    """scripts/train_bundled.sh trains examples/train_narrow.yaml from scratch, then
    train_narrow_more.yaml, then stages three, four and six to eleven
    (train_narrow_stage{3,4,6,...,11}.yaml), each from the export of the one before (stage five is
    a side branch from stage four); the last writes the bundled file, whose recorded config is
    stage eleven's (weights retrained with another recipe fail), and no other example config
    writes over the shipped file."""
    root = Path(__file__).resolve().parents[1]
    stages = ["train_narrow.yaml", "train_narrow_more.yaml"]
    stages += [f"train_narrow_stage{n}.yaml" for n in (3, 4, 6, 7, 8, 9, 10, 11)]
    configs = [load_train_config(str(root / "examples" / name)) for name in stages]
    bundled = root / "tokenizer_core" / "bundled" / "DV4x8x8-mill" / "model.pt"
    assert configs[0].model.init == "random"
    for before, after in itertools.pairwise(configs):
        assert before.export is not None and Path(before.export.path) != bundled
        assert after.model.init == "pretrained" and Path(after.model.name) == Path(before.export.path)
    last = configs[-1]
    assert last.export is not None and Path(last.export.path) == bundled
    script = (root / "scripts" / "train_bundled.sh").read_text()
    positions = [script.index(f"train-tokenizer examples/{name}") for name in stages]
    assert positions == sorted(positions)
    for other in sorted((root / "examples").glob("train_*.yaml")):
        if other.name != stages[-1]:
            cfg = load_train_config(str(other))
            assert cfg.export is None or Path(cfg.export.path) != bundled, other.name
    assert_trained_by(bundled, last)


def assert_trained_by(weights: Path, config) -> None:
    """The config recorded in an exported file is `config` (paths aside), and the run reached at
    most its steps."""
    recorded = torch.load(weights, weights_only=True)["extra"]
    # through the schema, as any recorded config is read: keys added since take their defaults
    made_by = from_dict(TrainConfig, recorded["train_config"]).to_dict()
    made_by, recipe = (json.loads(json.dumps(c)) for c in (made_by, config.to_dict()))
    for paths in (made_by, recipe):  # absolute paths of the machine that trained it
        del paths["data"]["shards"], paths["model"]["name"], paths["output_dir"], paths["export"]
    assert made_by == recipe
    assert 0 < recorded["steps"] <= config.steps  # max_minutes may end a run early


def test_carried_export_is_stage_thirteens_result():
    """Stages twelve and thirteen did not ship; stage thirteen's export is kept in data/carry/
    (out/ is git-ignored) for the next stage: it ran on from stage twelve, which ran on from the
    shipped stage eleven, and its recorded config is stage thirteen's."""
    root = Path(__file__).resolve().parents[1]
    twelve, thirteen = (load_train_config(str(root / "examples" / f"train_narrow_stage{n}.yaml")) for n in (12, 13))
    assert Path(twelve.model.name).name == "DV4x8x8-mill-narrow-stage11.pt"
    assert twelve.export is not None and Path(thirteen.model.name) == Path(twelve.export.path)
    assert thirteen.export is not None
    assert_trained_by(root / "data" / "carry" / Path(thirteen.export.path).name, thirteen)


def test_colour_augmentation_reorders_channels_and_scales_saturation():
    from pipeline.tokenizer_tools.train_tokenizer import ClipBank

    red = torch.zeros(3, 8, 8, 3, dtype=torch.uint8)
    red[..., 0] = 150  # saturation x2 stays inside 0-255: nothing is clipped
    red[..., 1:] = 100
    plain = ClipBank([red.numpy()], None, hflip=False).batch(16, torch.Generator().manual_seed(0))
    assert torch.all(plain[:, 0] > plain[:, 1])  # off: every clip stays red
    recoloured = ClipBank([red.numpy()], None, hflip=False, colour=True).batch(64, torch.Generator().manual_seed(0))
    assert recoloured.min() >= -1 and recoloured.max() <= 1
    dominant = recoloured.mean(dim=(2, 3, 4)).argmax(1)
    assert set(dominant.tolist()) == {0, 1, 2}  # the red moved to every channel
    spread = (recoloured.amax(1) - recoloured.amin(1)).mean(dim=(1, 2, 3))
    assert spread.max() > 1.5 * spread.min()  # saturation varies
    grey = recoloured.mean(1)
    assert torch.allclose(grey, grey[:1].expand_as(grey), atol=2 / 127.5)  # about each pixel's grey value


def test_latent_search_finds_a_better_latent_and_its_pull_reaches_the_encoder_only(shard):
    """loss.latent: a few Adam steps on the shipped model's latent of a real clip lower the squared
    error of its decode; the distance to that latent is positive and trains the encoder alone."""
    from pipeline.tokenizer_tools.evaluate import iter_eval_clips
    from tokenizer_core import metrics

    clip = next(iter_eval_clips(str(shard), 9, (64, 64)))
    video = (metrics.from_uint8_frames(torch.as_tensor(clip.frames)) / 127.5 - 1).unsqueeze(0)
    tok = tokenizer_core.from_pretrained("DV4x8x8-mill").float().train()

    def decode_error(ids):
        with torch.no_grad():
            return float((tok.decode(ids) - video).square().mean())

    plain, searched = tok.encode(video), tok.encode_searched(video, steps=8, lr=0.03)
    assert searched.shape == plain.shape and bool((searched != plain).any())
    assert decode_error(searched) < 0.97 * decode_error(plain)
    out, gap = tok.forward_with_latent_gap(video, steps=8, lr=0.03)
    assert out.reconstruction.shape == video.shape and float(gap) > 0
    gap.backward()
    grads = {name: p.grad for name, p in tok.named_parameters()}
    assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if n.startswith("encoder."))
    assert all(g is None for n, g in grads.items() if n.startswith(("decoder.", "post_quant_conv.")))
    continuous = tokenizer_core.from_pretrained("CV4x8x8-tiny", init="random")
    with pytest.raises(ValueError, match="discrete"):
        continuous.forward_with_latent_gap(video, steps=1, lr=0.03)


def test_latent_loss_trains_and_logs_its_distance(tmp_path, shard):
    loss = {"l1": 0.0, "mse": 1.0, "ssim": 0.0, "temporal": 0.0, "latent": 0.1, "search_steps": 2}
    cfg = load_train_config(str(_write_config(tmp_path, shard, steps=3, loss=loss)))
    run_training(cfg)
    rows = _log(Path(cfg.output_dir))
    assert len(rows) == 3 and all(r["latent_gap"] > 0 for r in rows)
    assert all(r["loss"] == pytest.approx(r["mse"] + 0.1 * r["latent_gap"], rel=1e-5) for r in rows)
    path = _write_config(tmp_path, shard, loss={**loss, "search_steps": 0})
    with pytest.raises(SpecError, match=r"^loss\.search_steps"):
        load_train_config(str(path))


def test_latent_search_gap_script_scores_all_three_codings(tmp_path, shard):
    """scripts/latent_search_gap.py: per clip, the refined and the searched latents' decodes beat the
    encoder's; the token statistics of both codings are in range."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "scripts" / "latent_search_gap.py"
    args = ["--shards", str(shard), "--clips", "2", "--num-frames", "9", "--resolution", "64", "64", "--steps", "8"]
    proc = subprocess.run([sys.executable, str(script), "DV4x8x8-mill", *args, "--json", str(tmp_path / "gap.json")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "gap.json").read_text())
    assert len(report["per_clip"]) == 2
    assert all(r["psnr_searched"] > r["psnr"] + 0.1 and r["psnr_refined"] > r["psnr"] + 0.1 for r in report["per_clip"])
    for coding in ("plain", "refined"):
        assert 0 <= report["tokens"][coding]["temporal_repeat"] <= 1
        assert 0 < report["tokens"][coding]["bits_per_token_given_previous"] < math.log2(64000)
    bad = subprocess.run([sys.executable, str(script), "DV4x8x8-mill", "--shards", str(tmp_path / "none-*.tar")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "none-" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize("trainable", ["encoder", "decoder"])
def test_training_one_half_keeps_the_other_exactly(tmp_path, shard, trainable):
    """model.trainable: the frozen half's weights come out bit-identical, the other half moved."""
    start = tokenizer_core.save_checkpoint(tokenizer_core.from_pretrained("DV4x8x8-tiny", init="random"),
                                           tmp_path / "start.pt")
    model = {"name": str(start), "init": "pretrained", "trainable": trainable}
    cfg = load_train_config(str(_write_config(tmp_path, shard, steps=3, model=model)))
    trained = run_training(cfg).inference_model.state_dict()
    before = tokenizer_core.from_pretrained(start).state_dict()
    frozen = ("decoder.", "post_quant_conv.") if trainable == "encoder" else ("encoder.", "quant_conv.")
    for name, value in before.items():
        if name.startswith(frozen):
            assert torch.equal(trained[name], value), name
    assert any(not torch.equal(trained[n], v) for n, v in before.items()
               if v.is_floating_point() and not n.startswith(frozen))
    path = _write_config(tmp_path, shard, model={"name": "DV4x8x8-tiny", "init": "random", "trainable": trainable})
    with pytest.raises(SpecError, match=r"^model\.trainable"):
        load_train_config(str(path))
