"""tokenizer_core: shapes, causality, FSQ ids, batch invariance, presets, checkpoints.

Tiny presets run real forward passes on CPU; full presets are checked on the meta device
(shapes only, no memory) and once for real at a small resolution.
"""

from __future__ import annotations

import math

import pytest
import torch

import tokenizer_core as tc
from tests.tokenizer_support import spread_tokenizer
from tokenizer_core.fsq import FSQuantizer
from tokenizer_core.model import CosmosTokenizer

torch.set_num_threads(1)

VIDEO_TINY = ["CV4x8x8-tiny", "CV8x8x8-tiny", "CV8x16x16-tiny", "DV4x8x8-tiny", "DV8x8x8-tiny", "DV8x16x16-tiny"]
IMAGE_TINY = ["CI8x8-tiny", "CI16x16-tiny", "DI8x8-tiny", "DI16x16-tiny"]


def _video(b: int, t: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, t, h, w, generator=g) * 2 - 1


def _factors(name: str) -> tuple[int, int]:
    cfg = tc.preset_config(name)
    return cfg.temporal_compression, cfg.spatial_compression


@pytest.mark.parametrize("name", [n for n in tc.list_presets() if not n.endswith("-tiny")])
def test_official_preset_shapes_match_official_compression(name: str) -> None:
    """Every official preset maps T x H x W to (1 + (T-1)/t) x H/s x W/s latents (meta device: no memory)."""
    cfg = tc.preset_config(name)
    t, s = cfg.temporal_compression, cfg.spatial_compression
    frames, h, w = (33, 640, 1024) if cfg.video else (1, 640, 1024)
    with torch.device("meta"):
        tok = CosmosTokenizer(cfg)
        x = torch.empty(1, 3, frames, h, w) if cfg.video else torch.empty(1, 3, h, w)
        latent = tok._latent(x)
        recon = tok._decode_raw(latent)
    expected = (1 + (frames - 1) // t, h // s, w // s) if cfg.video else (h // s, w // s)
    assert tuple(latent.shape[2:]) == expected
    assert latent.shape[1] == cfg.latent_channels
    assert tuple(recon.shape) == tuple(x.shape)


def test_dv8x16x16_gives_5x40x64_ids_for_33x640x1024() -> None:
    """The shape the Cosmos autoregressive model uses: 12,800 ids per 33-frame 640x1024 chunk."""
    with torch.device("meta"):
        tok = CosmosTokenizer(tc.preset_config("DV8x16x16"))
        _, ids = tok._quantize(tok._latent(torch.empty(1, 3, 33, 640, 1024)))
    assert ids is not None and tuple(ids.shape) == (1, 5, 40, 64) and ids.dtype == torch.int64
    assert tok.config.vocab_size == 64000


@pytest.mark.parametrize("name", VIDEO_TINY + IMAGE_TINY)
def test_tiny_presets_encode_decode_shapes_and_dtypes(name: str) -> None:
    """encode gives int64 ids (discrete) or float latents (continuous); decode restores the input shape."""
    tok = tc.from_pretrained(name, init="random")
    t, s = _factors(name)
    x = _video(2, 1 + 2 * t, 64, 64) if tok.config.video else _video(2, 1, 64, 64)[:, :, 0]
    out = tok.encode(x)
    if tok.config.discrete:
        assert out.dtype == torch.int64
        assert int(out.min()) >= 0 and int(out.max()) < 64000
        assert out.shape[0] == 2 and out.shape[-2:] == (64 // s, 64 // s)
    else:
        assert out.is_floating_point() and out.shape[1] == 16
    recon = tok.decode(out)
    assert recon.shape == x.shape and torch.isfinite(recon).all()


@pytest.mark.parametrize("name", ["DV8x16x16-tiny", "CV8x8x8-tiny", "CV4x8x8-tiny"])
def test_encoder_is_causal(name: str) -> None:
    """Changing frames after 1 + k*t never changes latent frames 0..k."""
    tok = spread_tokenizer(name)
    t, _ = _factors(name)
    x = _video(1, 1 + 4 * t, 32, 32)
    changed = x.clone()
    changed[:, :, 1 + 2 * t:] = _video(1, 2 * t, 32, 32, seed=5)
    with torch.no_grad():
        a, b = tok._latent(x), tok._latent(changed)
    assert torch.equal(a[:, :, :3], b[:, :, :3])
    assert not torch.allclose(a[:, :, 3:], b[:, :, 3:], atol=1e-3)
    ids_a, ids_b = tok.encode(x), tok.encode(changed)
    assert torch.equal(ids_a[..., :3, :, :], ids_b[..., :3, :, :])


@pytest.mark.parametrize("name", ["DV8x16x16-tiny", "CV8x8x8-tiny"])
def test_decoder_is_causal(name: str) -> None:
    """Decoded frames 0 .. 1+k*t depend only on latent frames 0..k."""
    tok = spread_tokenizer(name)
    t, _ = _factors(name)
    z = tok.encode(_video(1, 1 + 3 * t, 32, 32))
    z2 = tok.encode(_video(1, 1 + 3 * t, 32, 32, seed=9))
    mixed = torch.cat([z[..., :2, :, :], z2[..., 2:, :, :]], dim=-3)
    a, b = tok.decode(z), tok.decode(mixed)
    assert torch.allclose(a[:, :, : 1 + t], b[:, :, : 1 + t], atol=1e-6)
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("name", ["DV8x16x16-tiny", "CV4x8x8-tiny"])
def test_image_is_first_frame_of_video(name: str) -> None:
    """A one-frame video encodes to exactly the first latent frame of any video starting with it."""
    tok = spread_tokenizer(name)
    t, _ = _factors(name)
    x = _video(1, 1 + 2 * t, 32, 32)
    full, single = tok.encode(x), tok.encode(x[:, :, :1])
    assert single.shape[-3] == 1
    if tok.config.discrete:
        assert torch.equal(single[:, :1], full[:, :1])
    else:
        assert torch.allclose(single[:, :, :1], full[:, :, :1], atol=1e-6)
    assert tok.decode(single).shape[2] == 1


def test_fsq_ids_codes_round_trip_over_whole_vocabulary() -> None:
    """All 64,000 ids -> codes -> ids is the identity; quantize() agrees with indices_to_codes()."""
    fsq = FSQuantizer([8, 8, 8, 5, 5, 5])
    ids = torch.arange(64000).view(1, 64000)
    codes = fsq.indices_to_codes(ids)
    assert codes.shape == (1, 6, 64000) and codes.abs().max() <= 1
    assert torch.unique(codes[0], dim=1).shape[1] == 64000
    z = torch.randn(2, 6, 5, 7) * 3
    q_codes, q_ids = fsq.quantize(z)
    assert q_ids.dtype == torch.int64 and q_ids.shape == (2, 5, 7)
    assert torch.equal(fsq.indices_to_codes(q_ids), q_codes)
    assert torch.equal(fsq.implicit_codebook, fsq.indices_to_codes(torch.arange(64000).view(1, -1))[0].T)


def test_fsq_straight_through_gradient() -> None:
    """Codes carry a gradient back to the encoder output (straight-through rounding)."""
    fsq = FSQuantizer([8, 8, 8, 5, 5, 5])
    z = torch.randn(1, 6, 4, requires_grad=True)
    codes, _ = fsq.quantize(z)
    codes.sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["DV4x8x8-tiny", "CV8x8x8-tiny", "DI8x8-tiny"])
def test_same_result_at_batch_size_1_and_4(name: str) -> None:
    tok = spread_tokenizer(name)
    t, _ = _factors(name)
    x = _video(4, 1 + 2 * t, 32, 32)
    batched = tok.encode(x)
    singles = torch.cat([tok.encode(x[i: i + 1]) for i in range(4)])
    if tok.config.discrete:
        assert torch.equal(batched, singles)
        assert len(torch.unique(batched)) >= 10  # the ids really vary
    else:
        assert torch.allclose(batched, singles, atol=1e-5)


def test_image_tokenizer_tokenizes_videos_frame_by_frame() -> None:
    tok = spread_tokenizer("DI8x8-tiny")
    x = _video(2, 3, 32, 32)
    ids = tok.encode(x)
    assert ids.shape == (2, 3, 4, 4)
    assert torch.equal(ids[:, 1], tok.encode(x[:, :, 1]))
    assert tok.decode(ids).shape == x.shape


def test_spatial_padding_is_cropped_back() -> None:
    """H, W that are not multiples of the spatial factor are padded for encode and cropped by decode."""
    tok = tc.from_pretrained("DV4x8x8-tiny", init="random")
    x = _video(1, 5, 30, 44)
    ids = tok.encode(x)
    assert ids.shape == (1, 2, 4, 6)
    assert tok.decode(ids, output_size=(30, 44)).shape == x.shape
    assert tok(x).shape == x.shape


def test_bad_inputs_raise_clear_errors() -> None:
    tok = tc.from_pretrained("DV8x8x8-tiny", init="random")
    with pytest.raises(ValueError, match="1 \\+ k\\*8"):
        tok.encode(_video(1, 10, 32, 32))
    with pytest.raises(ValueError, match="ids must lie in"):
        tok.decode(torch.full((1, 2, 4, 4), 64000))
    with pytest.raises(TypeError, match="integer"):
        tok.decode(torch.zeros(1, 2, 4, 4))  # float "ids" of a discrete model are refused


def test_random_init_is_deterministic_and_explicit() -> None:
    a = tc.from_pretrained("DV4x8x8-tiny", init="random")
    b = tc.from_pretrained("DV4x8x8-tiny", init="random")
    c = tc.from_pretrained("DV8x8x8-tiny", init="random")
    assert a.weights_hash == b.weights_hash != c.weights_hash
    assert len(a.weights_hash) == 64
    with pytest.raises(ValueError, match="without weights"):
        tc.from_pretrained("DV4x8x8-tiny")
    with pytest.raises(FileNotFoundError, match="not a file"):
        tc.from_pretrained("no-such-tokenizer")


def test_weights_hash_changes_with_any_weight() -> None:
    tok = tc.from_pretrained("CV4x8x8-tiny", init="random")
    before = tok.weights_hash
    with torch.no_grad():
        first = next(tok.parameters())
        first[(0,) * first.ndim] += 1e-3
    assert tok.weights_hash != before


def test_full_size_preset_runs_at_small_resolution() -> None:
    """The real DV8x16x16 architecture (110M params, random init) at 9x32x32: shapes and streaming."""
    tok = spread_tokenizer("DV8x16x16")
    x = _video(1, 17, 32, 32)
    ids = tok.encode(x)
    assert ids.shape == (1, 3, 2, 2) and len(torch.unique(ids)) > 1
    assert torch.equal(ids, tok.encode(x, mode="stream", chunk_frames=8))
    assert math.isclose(sum(p.numel() for p in tok.parameters()) / 1e6, 112.47, abs_tol=0.01)


@pytest.mark.parametrize("name", ["DV4x8x8-tiny", "CV8x8x8-tiny"])
def test_training_forward_matches_inference_forward(name: str) -> None:
    """Under autograd the causal 1x1 temporal convs take the padded-gemm path (training speed);
    without it, the in-place per-item path (memory). Both must give the same reconstruction."""
    tok = spread_tokenizer(name)
    t, _ = _factors(name)
    x = _video(2, 1 + 2 * t, 32, 32)
    with torch.no_grad():
        reference = tok.forward_with_latents(x).reconstruction
    trained = tok.forward_with_latents(x.clone().requires_grad_(True)).reconstruction
    assert trained.requires_grad
    torch.testing.assert_close(trained.detach(), reference, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["DV4x8x8-tiny", "CV8x8x8-tiny", "DI8x8-tiny"])
def test_forward_is_differentiable_end_to_end(name: str) -> None:
    """Training path: the reconstruction loss reaches the encoder's first conv (FSQ straight-through)."""
    tok = tc.from_pretrained(name, init="random").train()
    t, _ = _factors(name)
    x = _video(1, 1 + t, 32, 32) if tok.config.video else _video(1, 1, 32, 32)[:, :, 0]
    out = tok.forward_with_latents(x)
    assert out.reconstruction.shape == x.shape
    (out.reconstruction - x).abs().mean().backward()
    first = next(tok.encoder.parameters())
    assert first.grad is not None and first.grad.abs().sum() > 0
    assert (out.ids is not None) == tok.config.discrete
