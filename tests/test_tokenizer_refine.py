"""`refine_steps`: latent frames refined against the decoder, on the shipped model and real video.

The refinement must lower the clip's error, keep tokens causal (a later frame never changes an
earlier token), and give the same ids whole, streamed, windowed, batched and under inference mode.
"""

from __future__ import annotations

import pytest
import torch

import tokenizer_core
from tokenizer_core import metrics

SHARD = "shards-000001.tar"  # carphone (176x144) + bikes (640x272): cheap to decode


@pytest.fixture(scope="module")
def tok():
    torch.set_num_threads(2)
    return tokenizer_core.from_pretrained("DV4x8x8-mill")


@pytest.fixture(scope="module")
def video(sample_shards) -> torch.Tensor:
    """A real 9-frame 64x64 clip [1, 3, 9, 64, 64] in [-1, 1]."""
    from pipeline.tokenizer_tools.evaluate import iter_eval_clips

    shard = next(s for s in sample_shards if s.name == SHARD)
    clip = next(iter_eval_clips(str(shard), 9, (64, 64)))
    return (metrics.from_uint8_frames(torch.as_tensor(clip.frames)) / 127.5 - 1).unsqueeze(0)


def _error(tok, ids: torch.Tensor, video: torch.Tensor) -> float:
    return float((tok.decode(ids) - video).square().mean())


def test_refinement_lowers_the_error_and_is_the_same_in_every_mode(tok, video):
    plain, refined = tok.encode(video), tok.encode(video, refine_steps=6)
    assert refined.shape == plain.shape and float((refined != plain).float().mean()) > 0.05
    assert _error(tok, refined, video) < 0.95 * _error(tok, plain, video)
    assert torch.equal(tok.encode(video, refine_steps=6), refined)  # deterministic
    with torch.inference_mode():  # as the actors call it
        assert torch.equal(tok.encode(video, refine_steps=6), refined)
    for chunk in (4, 8):
        assert torch.equal(tok.encode(video, mode="stream", chunk_frames=chunk, refine_steps=6), refined)
    pair = torch.cat([video, video.flip(-1)])
    batched = tok.encode(pair, refine_steps=6)
    assert torch.equal(batched[:1], refined)
    assert torch.equal(batched[1:], tok.encode(video.flip(-1), refine_steps=6))
    ten = torch.cat([video[:, :, :5], video[:, :, 4:]], dim=2)
    assert torch.equal(tok.encode(ten, mode="windowed", window=5, refine_steps=6),
                       torch.cat([tok.encode(ten[:, :, :5], refine_steps=6), tok.encode(ten[:, :, 5:], refine_steps=6)],
                                 dim=-3))


def test_refined_tokens_stay_causal_where_the_whole_clip_search_does_not(tok, video):
    """Frames 5-8 replaced: the refined ids of latent frames 0-1 (frames 0-4) do not move; the
    non-causal whole-clip search (`encode_searched`) lets them move."""
    changed = video.clone()
    changed[:, :, 5:] = changed[:, :, 5:].flip(-1).flip(-2)
    a, b = tok.encode(video, refine_steps=6), tok.encode(changed, refine_steps=6)
    assert torch.equal(a[:, :2], b[:, :2]) and not torch.equal(a[:, 2:], b[:, 2:])
    searched_a, searched_b = tok.encode_searched(video, steps=6), tok.encode_searched(changed, steps=6)
    assert not torch.equal(searched_a[:, :2], searched_b[:, :2])


def test_refinement_needs_a_discrete_tokenizer(video):
    continuous = tokenizer_core.from_pretrained("CV4x8x8-tiny", init="random")
    with pytest.raises(ValueError, match="discrete"):
        continuous.encode(video, refine_steps=2)
    with pytest.raises(ValueError, match="refine_steps"):
        tokenizer_core.from_pretrained("DV4x8x8-tiny", init="random").encode(video, refine_steps=-1)


def test_image_tokenizers_refine_each_frame_on_its_own(video):
    """DI models: every image is its own latent; a video's frames refine as they would one by one."""
    tok = tokenizer_core.from_pretrained("DI8x8-tiny", init="random")
    frames = video[:, :, :3]
    plain, refined = tok.encode(frames), tok.encode(frames, refine_steps=4)
    assert refined.shape == plain.shape == (1, 3, 8, 8)
    assert _error(tok, refined, frames) < _error(tok, plain, frames)
    alone = torch.stack([tok.encode(frames[:, :, i], refine_steps=4) for i in range(3)], dim=1)
    assert torch.equal(refined, alone)


def test_refine_problem_names_what_cannot_refine(tmp_path):
    """The one check behind tokenizer.refine_steps and eval --refine-steps: continuous models and the
    TorchScript backend are refused with the reason; a native FSQ model passes."""
    from tokenizer_core.model import refine_problem
    from tokenizer_core.official import export_official_jit

    native = tokenizer_core.from_pretrained("DV4x8x8-tiny", init="random")
    assert refine_problem(native) is None
    assert "continuous" in str(refine_problem(tokenizer_core.from_pretrained("CV4x8x8-tiny", init="random")))
    export_official_jit(native, tmp_path, torch.zeros(1, 3, 5, 32, 32), autoencoder=False)
    jit = tokenizer_core.from_pretrained(str(tmp_path), backend="jit")
    assert "native backend" in str(refine_problem(jit))
