"""Streaming (any length, exactly causal) and windowed modes, and the Haar patcher's definition."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tests.tokenizer_support import spread_tokenizer
from tokenizer_core.patching import Patcher, Patcher3D, UnPatcher, UnPatcher3D
from tokenizer_core.video import DecoderFactorized, EncoderFactorized

torch.set_num_threads(1)


def _video(t: int, h: int = 32, w: int = 32, b: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, t, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("name", ["CV8x8x8-tiny", "CV4x8x8-tiny", "CV8x16x16-tiny"])
@pytest.mark.parametrize("chunk", [1, 3])
def test_stream_encode_equals_full_pass(name: str, chunk: int) -> None:
    """Chunked encoding with carried causal state = one full pass (<= 1e-5 fp32), any chunk size."""
    tok = spread_tokenizer(name)
    t = tok.config.temporal_compression
    x = _video(1 + 7 * t, b=2)
    full = tok.encode(x)
    streamed = tok.encode(x, mode="stream", chunk_frames=chunk * t)
    assert streamed.shape == full.shape
    assert (streamed - full).abs().max() <= 1e-5


def test_stream_ids_equal_full_pass_ids() -> None:
    tok = spread_tokenizer("DV8x16x16-tiny")
    x = _video(1 + 6 * 8)
    assert torch.equal(tok.encode(x, mode="stream", chunk_frames=8), tok.encode(x))


@pytest.mark.parametrize("name", ["CV8x8x8-tiny", "DV4x8x8-tiny"])
def test_stream_decode_equals_full_pass(name: str) -> None:
    tok = spread_tokenizer(name)
    t = tok.config.temporal_compression
    z = tok.encode(_video(1 + 5 * t))
    full = tok.decode(z)
    for chunk in (1, 2):
        out = tok.decode(z, mode="stream", chunk_latents=chunk)
        assert out.shape == full.shape
        assert (out - full).abs().max() <= 1e-5 * max(1.0, float(full.abs().max()))


def test_stream_attention_caches_normalised_input_and_matches_with_biases() -> None:
    """Temporal attention keeps one [positions, T, C] block per chunk (not keys and values), and
    its rewritten scores/values equal the full pass also with nonzero key/value biases."""
    from tokenizer_core.attention3d import CausalTemporalAttnBlock

    tok = spread_tokenizer("CV8x8x8-tiny")
    blocks = [m for m in tok.encoder.modules() if isinstance(m, CausalTemporalAttnBlock)]
    with torch.no_grad():
        for m in blocks:
            for conv in (m.k, m.v):
                conv.conv3d.bias.copy_(torch.randn(conv.conv3d.bias.shape, generator=torch.Generator().manual_seed(3)))
    x = _video(1 + 4 * 8)
    session = tok.stream_session("encode")
    parts = [tok.encode_chunk(session, part) for part in (x[:, :, :9], x[:, :, 9:17], x[:, :, 17:33])]
    assert (torch.cat(parts, dim=2) - tok.encode(x)).abs().max() <= 1e-5
    states = [state for module, state in zip(session._modules, session._state, strict=True) if module in blocks]
    assert states and all(set(state) == {"h"} for state in states)
    channels = blocks[0].k.conv3d.in_channels
    latent_frames = parts[0].shape[2] + parts[1].shape[2] + parts[2].shape[2]
    cells = parts[0].shape[3] * parts[0].shape[4]
    assert sum(b.shape[2] for b in states[0]["h"]) == latent_frames
    assert sum(b.numel() for b in states[0]["h"]) == latent_frames * cells * channels


def test_encode_stream_accepts_an_iterator_of_chunks() -> None:
    """Chunks can come from a reader one at a time; outputs arrive per chunk."""
    tok = spread_tokenizer("CV8x8x8-tiny")
    x = _video(1 + 4 * 8)
    chunks = iter([x[:, :, :9], x[:, :, 9:17], x[:, :, 17:33]])
    parts = list(tok.encode_stream(chunks))
    assert [p.shape[2] for p in parts] == [2, 1, 2]
    assert (torch.cat(parts, dim=2) - tok.encode(x)).abs().max() <= 1e-5
    with pytest.raises(ValueError, match="multiple of 8"):
        list(tok.encode_stream([x[:, :, :9], x[:, :, 9:14]]))


@pytest.mark.parametrize("name", ["CV8x8x8-tiny", "DV8x16x16-tiny", "CV4x8x8-tiny"])
def test_long_clip_chunked_at_full_resolution_equals_one_pass(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Long clips run their full-resolution levels in time chunks with carried causal state
    (lower peak memory); the result is that of one pass over the whole clip."""
    tok = spread_tokenizer(name)
    x = _video(49, b=2)  # 13 frames at full resolution in both the encoder and the decoder
    calls = {"enc": 0, "dec": 0}
    for cls, key in ((EncoderFactorized, "enc"), (DecoderFactorized, "dec")):
        real = cls._full_resolution_chunked

        def counted(self, *args, _real=real, _key=key):  # type: ignore[no-untyped-def]
            calls[_key] += 1
            return _real(self, *args)

        monkeypatch.setattr(cls, "_full_resolution_chunked", counted)
    z = tok.encode(x)
    video = tok.decode(z)
    assert calls == {"enc": 1, "dec": 1}
    monkeypatch.setattr(EncoderFactorized, "chunk_from_frames", 10 ** 9)
    monkeypatch.setattr(DecoderFactorized, "chunk_from_frames", 10 ** 9)
    z_one, video_one = tok.encode(x), tok.decode(z)
    assert calls == {"enc": 1, "dec": 1}
    if tok.config.discrete:
        assert torch.equal(z, z_one)
    else:
        assert (z - z_one).abs().max() <= 1e-5
    assert (video - video_one).abs().max() <= 1e-5 * max(1.0, float(video_one.abs().max()))


def test_stream_state_is_dropped_after_use() -> None:
    tok = spread_tokenizer("CV8x8x8-tiny")
    x = _video(17)
    tok.encode(x, mode="stream")
    assert all(getattr(m, "_stream", None) is None for m in tok.modules())
    assert (tok.encode(x) - tok.encode(x, mode="stream")).abs().max() <= 1e-5


def test_windowed_mode_restarts_causal_context_per_window() -> None:
    """The official inference: independent 17-frame windows; differs from the causal stream."""
    tok = spread_tokenizer("CV8x8x8-tiny")
    x = _video(34)
    windowed = tok.encode(x, mode="windowed", window=17)
    assert windowed.shape[2] == 6
    assert torch.allclose(windowed[:, :, 3:], tok.encode(x[:, :, 17:]), atol=1e-6)
    assert torch.allclose(windowed[:, :, :3], tok.encode(x[:, :, :17]), atol=1e-6)
    assert tok.decode(windowed, mode="windowed", window=17).shape == x.shape


# ----------------------------------------------------------------------- Haar patcher definition
def _haar_conv_level(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """One level written as the strided [1, 1]/sqrt(2), [1, -1]/sqrt(2) filters of the paper/official code."""
    a = 1 / math.sqrt(2)
    bands = [x]
    for dim in dims:
        nxt = []
        for band in bands:
            moved = band.movedim(dim, -1)
            lo = (moved[..., 0::2] + moved[..., 1::2]) * a
            hi = (moved[..., 0::2] - moved[..., 1::2]) * a
            nxt += [lo.movedim(-1, dim), hi.movedim(-1, dim)]
        bands = nxt
    scale = 2 * math.sqrt(2) if len(dims) == 3 else 2.0
    return torch.cat(bands, dim=1) / scale


def test_haar_3d_patcher_matches_filter_definition_and_inverts() -> None:
    x = _video(9, 16, 24)
    ref = torch.cat([x[:, :, :1].repeat(1, 1, 4, 1, 1), x[:, :, 1:]], dim=2)
    for _ in range(2):
        ref = _haar_conv_level(ref, (2, 3, 4))
    out = Patcher3D(4, "haar")(x)
    assert out.shape == (1, 192, 3, 4, 6)
    assert torch.allclose(out, ref, atol=1e-6)
    assert torch.allclose(UnPatcher3D(4, "haar")(out), x, atol=1e-6)


def test_haar_2d_patcher_splits_width_first_and_inverts() -> None:
    x = _video(1, 16, 24)[:, :, 0]
    ref = _haar_conv_level(_haar_conv_level(x, (3, 2)), (3, 2))
    out = Patcher(4, "haar")(x)
    assert torch.allclose(out, ref, atol=1e-6)
    assert not torch.allclose(out, _haar_conv_level(_haar_conv_level(x, (2, 3)), (2, 3)), atol=1e-3)
    assert torch.allclose(UnPatcher(4, "haar")(out), x, atol=1e-6)
    # The lowest band is the 4x4 block average: the first channels are a small image.
    assert torch.allclose(out[:, 0], F.avg_pool2d(x, 4)[:, 0], atol=1e-5)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_low_precision_runs_with_fsq_in_fp32(dtype: str) -> None:
    """bf16/fp16 weights: latents stay close to fp32, FSQ quantises in fp32 and ids stay int64."""
    low_dtype = getattr(torch, dtype)
    x = _video(17, 64, 64)
    cont, cont_ref = spread_tokenizer("CV8x8x8-tiny").to(low_dtype), spread_tokenizer("CV8x8x8-tiny")
    lat, lat_ref = cont.encode(x), cont_ref.encode(x)
    assert lat.dtype == low_dtype
    assert (lat.float() - lat_ref).norm() / lat_ref.norm() < 0.05
    tok = spread_tokenizer("DV8x16x16-tiny").to(low_dtype)
    ids = tok.encode(x)
    assert ids.dtype == torch.int64 and int(ids.max()) < 64000
    # quant_conv was scaled x200 to spread the ids, which also amplifies low-precision error, so
    # only a majority of positions keep the fp32 id (the rest sit near FSQ bin edges).
    assert (ids == spread_tokenizer("DV8x16x16-tiny").encode(x)).float().mean() >= 0.5
    assert tok.decode(ids).dtype == low_dtype
    # Streaming is exact only in fp32: in bf16/fp16 chunked and full passes round differently.
    assert tok.encode(x, mode="stream", chunk_frames=8).shape == ids.shape


def test_interleaved_stream_sessions_on_one_model_equal_full_passes() -> None:
    """Two videos streamed chunk by chunk in alternation through one model (as an actor serving two
    shard tasks does): each equals its own full pass, for encode and decode."""
    tok = spread_tokenizer("DV4x8x8-tiny")
    a, b = _video(1 + 4 * 4, seed=1), _video(1 + 4 * 4, seed=2)
    sessions = {"a": tok.stream_session("encode"), "b": tok.stream_session("encode")}
    parts: dict[str, list[torch.Tensor]] = {"a": [], "b": []}
    for lo, hi in ((0, 9), (9, 13), (13, 17)):
        for name, x in (("a", a), ("b", b)):
            parts[name].append(tok.encode_chunk(sessions[name], x[:, :, lo:hi]))
    ids = {name: torch.cat(p, dim=1) for name, p in parts.items()}
    assert torch.equal(ids["a"], tok.encode(a)) and torch.equal(ids["b"], tok.encode(b))
    decoders = {"a": tok.stream_session("decode"), "b": tok.stream_session("decode")}
    frames: dict[str, list[torch.Tensor]] = {"a": [], "b": []}
    for lo, hi in ((0, 2), (2, 5)):
        for name in ("a", "b"):
            frames[name].append(tok.decode_chunk(decoders[name], ids[name][:, lo:hi]))
    for name in ("a", "b"):
        assert (torch.cat(frames[name], dim=2) - tok.decode(ids[name])).abs().max() <= 1e-5
