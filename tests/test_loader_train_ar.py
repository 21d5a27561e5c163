"""examples/train_ar.py: causal model, and a short run that learns structure the unigram model cannot."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import torch

from tests.loader_support import write_output

ROOT = Path(__file__).resolve().parents[1]


def load_example():
    spec = importlib.util.spec_from_file_location("train_ar", ROOT / "examples" / "train_ar.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_ar"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def structured_ids(shard: int, row: int, shape: tuple[int, int, int] = (3, 8, 8)) -> np.ndarray:
    """`shape` ids over 40 values: a random first frame, later frames mostly repeat it."""
    rng = np.random.default_rng(1000 * shard + row)
    first = rng.integers(0, 40, size=shape[1:])
    frames = [first]
    for _ in range(shape[0] - 1):
        noisy = frames[-1].copy()
        flip = rng.random(shape[1:]) < 0.1
        noisy[flip] = rng.integers(0, 40, size=int(flip.sum()))
        frames.append(noisy)
    return np.stack(frames)


def test_neighbours_are_the_ids_above_and_one_frame_before_the_next_token():
    """Worked by hand on a [2, 2, 3] clip: position p predicts video index p."""
    ar = load_example()
    tokens = torch.arange(12).reshape(2, 2, 3) + 100
    near = ar.clip_neighbours(tokens)
    none = -1
    # next index:      0     1     2     3    4    5    6     7     8     9    10   11  (EOV) (-)
    assert near[0].tolist() == [none, none, none, 100, 101, 102, none, none, none, 106, 107, 108, none, none]
    assert near[1].tolist() == [none] * 6 + [100, 101, 102, 103, 104, 105, none, none]


def test_model_is_causal_within_and_across_packed_clips():
    """Logits up to a position never change when later tokens change, in its clip or the next one."""
    ar = load_example()
    torch.manual_seed(0)
    model = ar.TinyGPT(vocab=20, grid=(2, 2, 3), dim=16, layers=2, heads=2).eval()
    pack = ar.CompactPack(torch.arange(1 << 16), ar.SequenceSpec(vocab_size=17), seq_len=20)
    clips = [torch.randint(0, 17, (2, 2, 3)) for _ in range(3)]

    def logits(cl):
        b = pack([{"tokens": c} for c in cl])
        return model(b["input_ids"], b["position_ids"], b["document_ids"], b["near"], b["coords"]).flatten(0, 1)

    base = logits(clips)
    for clip, index in ((0, 4), (1, 0), (1, 7), (2, 10)):
        changed = [c.clone() for c in clips]
        changed[clip].view(-1)[index:] = (changed[clip].view(-1)[index:] + 5) % 17
        for later in range(clip + 1, 3):
            changed[later] = (changed[later] + 3) % 17
        first = clip * 14 + index + 1  # flat position of the changed token (each clip: 14 = 12 + 2)
        assert torch.allclose(logits(changed)[:first], base[:first], atol=1e-5), (clip, index)
        assert not torch.allclose(logits(changed)[first:], base[first:]), "the change must matter later"


def test_short_run_beats_the_unigram_entropy_on_held_out_clips(tmp_path, capsys):
    """A few dozen steps on real token files: held-out loss (nats) falls below the unigram entropy."""
    write_output(tmp_path, [4, 4, 4, 4], shape=(3, 8, 8), ids_for=structured_ids)
    ar = load_example()
    code = ar.main([
        "--data", str(tmp_path), "--steps", "40", "--dim", "32", "--layers", "1", "--heads", "2",
        "--lr", "1e-2", "--threads", "1", "--log-every", "20", "--json",
    ])
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1])
    assert "unigram entropy of the training tokens" in out and "nats/token" in out
    assert result["train_clips"] == 12 and result["heldout_clips"] == 4
    assert result["heldout_loss_nats"] < result["unigram_entropy_nats"], out
    assert code == 0


# native aspect ratios (8x8, 6x10, 10x6 latent grids) and a longer whole-video row (5 latent frames)
MIXED = [(3, 8, 8), (3, 6, 10), (3, 10, 6), (5, 8, 8)]


def test_coords_follow_each_clips_own_grid_in_a_packed_row():
    """Two clips of different grids share a row; each token's (t, h, w) is in its own clip's grid."""
    ar = load_example()
    pack = ar.CompactPack(torch.arange(1 << 16), ar.SequenceSpec(vocab_size=17), seq_len=32)
    batch = pack([{"tokens": torch.zeros(2, 2, 3, dtype=torch.int64)}, {"tokens": torch.zeros(1, 3, 2, dtype=torch.int64)}])
    coords = batch["coords"][:, 0]  # [3, L] of the first row
    assert coords[:, 1:3].T.tolist() == [[0, 0, 0], [0, 0, 1]] and coords[:, 12].tolist() == [1, 1, 2]
    assert coords[:, 15:17].T.tolist() == [[0, 0, 0], [0, 0, 1]] and coords[:, 20].tolist() == [0, 2, 1]
    assert coords[0, 0] == coords[0, 13] == coords[0, 14] == -1  # BOV, EOV, next BOV
    assert batch["document_ids"][0, 14:21].tolist() == [1] * 7


def test_short_run_on_clips_with_different_token_grids(tmp_path, capsys):
    """Clips of several grids (native aspect ratios, whole videos) train and evaluate in one run."""
    write_output(tmp_path, [4, 4, 4, 4], ids_for=lambda s, r: structured_ids(s, r, MIXED[r]))
    ar = load_example()
    code = ar.main(["--data", str(tmp_path), "--steps", "40", "--dim", "32", "--layers", "1", "--heads", "2",
                    "--lr", "1e-2", "--threads", "1", "--log-every", "20", "--json"])
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1])
    assert "largest token grid [t, h, w] = [5, 10, 10]" in out
    assert result["heldout_clips"] == 4 and result["heldout_loss_nats"] < result["unigram_entropy_nats"], out
    assert code == 0


def test_fsq_digits_match_the_tokenizer_codebook():
    """The example's id -> FSQ digit map agrees with tokenizer_core's codebook for all 64,000 ids."""
    from tokenizer_core.fsq import FSQuantizer

    ar = load_example()
    levels = [8, 8, 8, 5, 5, 5]
    keep = np.random.default_rng(0).permutation(64_000)  # compact order differs from id order
    digits = ar.fsq_digits(keep, levels, vocab=64_003)
    fsq = FSQuantizer(levels)
    half = torch.tensor(levels) // 2
    codes = (digits[:64_000] - half).float() / half  # digits -> code values in [-1, 1]
    assert torch.equal(codes, fsq.implicit_codebook[torch.from_numpy(keep)])
    assert (digits[64_000:] == torch.tensor(levels)).all()  # "other", BOV, EOV, PAD: no digits
