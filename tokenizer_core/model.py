"""The tokenizer module: encoder + quant_conv + (FSQ | identity) + post_quant_conv + decoder.

Video x: [B, 3, T, H, W] in [-1, 1], T = 1 + k*t. Discrete encode -> ids [B, T', H', W'] int64;
continuous encode -> latents [B, C, T', H', W']; T' = 1 + k, H' = H/s, W' = W/s.
Image models (CI/DI) take [B, 3, H, W] (ids [B, H', W'], latents [B, C, H', W']) or a video
[B, 3, T, H, W], tokenized frame by frame (ids [B, T, H', W'], latents [B, C, T, H', W']).

The state dict of `CosmosTokenizer` uses the official names (encoder.*, decoder.*, quant_conv.*,
post_quant_conv.*), so official checkpoints load into it unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from tokenizer_core import image, video
from tokenizer_core.config import TokenizerConfig
from tokenizer_core.fsq import FSQuantizer
from tokenizer_core.layers3d import CausalConv3d
from tokenizer_core.streaming import StreamSession

Mode = Literal["full", "stream", "windowed"]
REFINE_LR = 0.03  # Adam step size of the latent refinement and search, in latent units (FSQ levels span ~[-1, 1])


@dataclass
class TokenizerOutput:
    """What `CosmosTokenizer.forward_with_latents` returns (for training)."""

    reconstruction: torch.Tensor  # [B, 3, T, H, W] (or [B, 3, H, W] for an image input)
    latents: torch.Tensor  # continuous latents, or FSQ codes with straight-through gradient
    ids: torch.Tensor | None  # FSQ ids (discrete models), no gradient


def _centre_pad(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Zero-pad H, W (last two dims) up to a multiple, centred like the official pad_video_batch."""
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    pads = (pw >> 1, pw - (pw >> 1), ph >> 1, ph - (ph >> 1))
    return (F.pad(x, pads) if ph or pw else x), pads


def _crop(x: torch.Tensor, pads: tuple[int, int, int, int]) -> torch.Tensor:
    left, right, top, bottom = pads
    return x[..., top: x.shape[-2] - bottom, left: x.shape[-1] - right]


class CosmosTokenizer(nn.Module):
    """A native PyTorch Cosmos-style tokenizer (see module docstring for shapes)."""

    def __init__(self, config: TokenizerConfig) -> None:
        super().__init__()
        self.config = config
        z_out = config.z_factor * config.z_channels
        if config.video:
            self.encoder: nn.Module = video.EncoderFactorized(config)
            self.decoder: nn.Module = video.DecoderFactorized(config)
            self.quant_conv: nn.Module = CausalConv3d(z_out, config.z_factor * config.latent_channels, 1, padding=0)
            self.post_quant_conv: nn.Module = CausalConv3d(config.latent_channels, config.z_channels, 1, padding=0)
        else:
            self.encoder = image.Encoder(config)
            self.decoder = image.Decoder(config)
            self.quant_conv = nn.Conv2d(z_out, config.z_factor * config.latent_channels, 1)
            self.post_quant_conv = nn.Conv2d(config.latent_channels, config.z_channels, 1)
        self.quantizer = FSQuantizer(config.levels) if config.discrete and config.levels else None
        # Channels-last convolutions and per-frame norms run 1.3-4x faster on CPU (oneDNN) than
        # NCDHW here; weights keep this layout through load_state_dict and dtype casts.
        self.memory_format = torch.channels_last_3d if config.video else torch.channels_last
        ndim = 5 if config.video else 4
        for param in self.parameters():
            if param.ndim == ndim:
                param.data = param.data.contiguous(memory_format=self.memory_format)

    # ----------------------------------------------------------------- properties
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def weights_hash(self) -> str:
        from tokenizer_core.checkpoint import state_dict_hash

        return state_dict_hash(self.state_dict())

    # ----------------------------------------------------------------- raw (no padding, no checks)
    def _latent(self, x: torch.Tensor) -> torch.Tensor:
        if not self.config.video:  # the video patcher takes any layout and returns channels-last
            x = x.contiguous(memory_format=self.memory_format)
        return self.quant_conv(self.encoder(x)).contiguous()

    def _quantize(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.quantizer is None:
            return h, None
        codes, ids = self.quantizer.quantize(h)
        return codes, ids

    def _decode_raw(self, x: torch.Tensor) -> torch.Tensor:
        if self.quantizer is not None and not x.is_floating_point():
            x = self.quantizer.indices_to_codes(x)
        x = x.to(self.dtype).contiguous(memory_format=self.memory_format)
        return self.decoder(self.post_quant_conv(x)).contiguous()

    # ----------------------------------------------------------------- shape handling
    def _frames(self, x: torch.Tensor) -> tuple[torch.Tensor, int | None]:
        """Image models: fold a video's time into batch. Returns (x for the encoder, batch size to unfold)."""
        if self.config.video:
            if x.ndim != 5 or x.shape[1] != 3:
                raise ValueError(f"{self.config.name}: expected video [B, 3, T, H, W], got {list(x.shape)}")
            t = self.config.temporal_compression
            if (x.shape[2] - 1) % t:
                raise ValueError(f"{self.config.name}: T must be 1 + k*{t} frames, got T={x.shape[2]}")
            return x, None
        if x.ndim == 4 and x.shape[1] == 3:
            return x, None
        if x.ndim == 5 and x.shape[1] == 3:
            return x.transpose(1, 2).flatten(0, 1), x.shape[0]
        raise ValueError(f"{self.config.name}: expected image [B, 3, H, W] or video [B, 3, T, H, W], got {list(x.shape)}")

    def _unfold(self, y: torch.Tensor, batch: int | None, channel_dim: bool) -> torch.Tensor:
        if batch is None:
            return y
        y = y.unflatten(0, (batch, -1))  # [B, T, ...]
        return y.transpose(1, 2) if channel_dim else y

    # ----------------------------------------------------------------- public API
    @torch.no_grad()
    def encode(self, video: torch.Tensor, mode: Mode = "full", chunk_frames: int | None = None,
               window: int = 17, refine_steps: int = 0) -> torch.Tensor:
        """video [B, 3, T, H, W] in [-1, 1] -> ids [B, T', H', W'] (int64) or latents [B, C, T', H', W'].

        mode "full": one causal pass. "stream": chunk by chunk with carried causal state (same
        result, memory bounded by `chunk_frames`, default 2*t). "windowed": independent windows
        of `window` frames (the official inference), each restarting the causal context.
        `refine_steps` > 0 (FSQ models): each latent frame is then refined against the decoder
        (`refine_latent`), in every mode; tokens stay causal.
        """
        if refine_steps < 0:
            raise ValueError(f"refine_steps must be >= 0, got {refine_steps}")
        if mode == "stream" and self.config.video:
            chunk = chunk_frames or 2 * self.config.temporal_compression
            rest = video[:, :, 1 + chunk:]
            parts = [video[:, :, :1 + chunk]] + (list(rest.split(chunk, dim=2)) if rest.shape[2] else [])
            return torch.cat(list(self.encode_stream(parts, refine_steps)), dim=-3)
        if mode == "windowed" and self.config.video:
            return torch.cat([self.encode(w, refine_steps=refine_steps) for w in video.split(window, dim=2)], dim=-3)
        if mode not in ("full", "stream", "windowed"):
            raise ValueError(f"unknown encode mode {mode!r}; expected full, stream or windowed")
        return self._encode_full(video, refine_steps)

    def _encode_full(self, video: torch.Tensor, refine_steps: int = 0) -> torch.Tensor:
        x, batch = self._frames(video)
        x, pads = _centre_pad(x.to(device=self.device, dtype=self.dtype), self.config.spatial_compression)
        h = self._latent(x)
        if refine_steps:
            decoder = self.stream_session("decode") if self.config.video else None
            h = self.refine_latent(h, x, pads, refine_steps, decoder)
        latents, ids = self._quantize(h)
        if ids is not None:
            return self._unfold(ids, batch, channel_dim=False)
        return self._unfold(latents, batch, channel_dim=True)

    def encode_stream(self, chunks: Iterable[torch.Tensor], refine_steps: int = 0) -> Iterator[torch.Tensor]:
        """Encode consecutive chunks of one video: the first with 1 + k*t frames, the rest with a
        multiple of t. Yields each chunk's ids / latents; concatenated they equal `encode(video)`."""
        session = self.stream_session("encode")
        for chunk in chunks:
            yield self.encode_chunk(session, chunk, refine_steps)

    def stream_session(self, side: Literal["encode", "decode"]) -> StreamSession:
        """A new, empty causal stream through the encoder or the decoder (for `*_chunk`)."""
        if not self.config.video:
            raise ValueError(f"{self.config.name}: streaming applies to video tokenizers")
        if side == "encode":
            return StreamSession(self.encoder, self.quant_conv)
        return StreamSession(self.decoder, self.post_quant_conv)

    @torch.no_grad()
    def encode_chunk(self, session: StreamSession, chunk: torch.Tensor, refine_steps: int = 0) -> torch.Tensor:
        """The next chunk of `session`'s video -> its ids [B, t', H', W'] / latents [B, C, t', H', W'].
        With `refine_steps`, the session also carries the refinement's decoder stream, so a video
        refined chunk by chunk gets the tokens of one refined pass."""
        t = self.config.temporal_compression
        if session.calls and chunk.shape[2] % t:
            raise ValueError(f"stream chunk {session.calls} has {chunk.shape[2]} frames: must be a multiple of {t}")
        x, _ = self._frames(chunk) if session.calls == 0 else (chunk, None)
        x, pads = _centre_pad(x.to(device=self.device, dtype=self.dtype), self.config.spatial_compression)
        with session.active():
            h = self._latent(x)
        if refine_steps:
            if session.decoder is None:
                session.decoder = self.stream_session("decode")
            h = self.refine_latent(h, x, pads, refine_steps, session.decoder)
        latents, ids = self._quantize(h)
        session.calls += 1
        return ids if ids is not None else latents

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor, mode: Mode = "full", chunk_latents: int = 2, window: int = 17,
               output_size: tuple[int, int] | None = None) -> torch.Tensor:
        """ids [B, T', H', W'] or latents [B, C, T', H', W'] -> video [B, 3, 1 + (T'-1)*t, H, W] in ~[-1, 1].

        `output_size` (H, W) crops the centred spatial padding that `encode` added.
        mode "stream" decodes `chunk_latents` latent frames at a time with carried state (same
        result); "windowed" inverts the windowed encode of `window`-frame windows.
        """
        if mode == "stream" and self.config.video:
            out = torch.cat(list(self.decode_stream(tokens.split(chunk_latents, dim=-3))), dim=2)
        elif mode == "windowed" and self.config.video:
            per_window = 1 + (window - 1) // self.config.temporal_compression
            out = torch.cat([self._decode_full(w) for w in tokens.split(per_window, dim=-3)], dim=2)
        else:
            out = self._decode_full(tokens)
        if output_size is not None:
            h, w = out.shape[-2:]
            ph, pw = h - output_size[0], w - output_size[1]
            out = _crop(out, (pw >> 1, pw - (pw >> 1), ph >> 1, ph - (ph >> 1)))
        return out

    def _check_ids(self, ids: torch.Tensor) -> None:
        if ids.is_floating_point():
            raise TypeError(f"{self.config.name}: ids must be an integer tensor, got {ids.dtype}")
        size = self.config.vocab_size or 0
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= size):
            raise ValueError(f"{self.config.name}: ids must lie in [0, {size}), got [{int(ids.min())}, {int(ids.max())}]")

    def _decode_full(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = tokens.to(self.device)
        if self.config.discrete:
            self._check_ids(tokens)
        image_video = not self.config.video and tokens.ndim == (4 if self.config.discrete else 5)
        batch = tokens.shape[0] if image_video else None
        if image_video:
            tokens = tokens.flatten(0, 1) if self.config.discrete else tokens.transpose(1, 2).flatten(0, 1)
        return self._unfold(self._decode_raw(tokens), batch, channel_dim=True)

    def decode_stream(self, chunks: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        """Decode consecutive latent chunks of one video; yields frames (1 + (n-1)*t, then n*t each)."""
        session = self.stream_session("decode")
        for chunk in chunks:
            yield self.decode_chunk(session, chunk)

    @torch.no_grad()
    def decode_chunk(self, session: StreamSession, chunk: torch.Tensor) -> torch.Tensor:
        """The next latent chunk of `session`'s video -> its frames [B, 3, T, H, W] (padding kept)."""
        chunk = chunk.to(self.device)
        if self.config.discrete:
            self._check_ids(chunk)
        with session.active():
            out = self._decode_raw(chunk)
        session.calls += 1
        return out

    def forward_with_latents(self, video: torch.Tensor) -> TokenizerOutput:
        """Differentiable reconstruction (FSQ straight-through); spatial padding is cropped back."""
        return self._forward(video)[0]

    def _forward(self, video: torch.Tensor) -> tuple[TokenizerOutput, torch.Tensor, torch.Tensor]:
        """(`forward_with_latents`' output, the pre-quantisation latent, the padded encoder input)."""
        x, batch = self._frames(video)
        x, pads = _centre_pad(x.to(self.dtype), self.config.spatial_compression)
        h = self._latent(x)
        latents, ids = self._quantize(h)
        recon = _crop(self._decode_raw(latents), pads)
        out = TokenizerOutput(
            reconstruction=self._unfold(recon, batch, channel_dim=True),
            latents=self._unfold(latents, batch, channel_dim=True),
            ids=None if ids is None else self._unfold(ids, batch, channel_dim=False),
        )
        return out, h, x

    def forward_with_latent_gap(self, video: torch.Tensor, steps: int, lr: float) -> tuple[TokenizerOutput, torch.Tensor]:
        """`forward_with_latents`, and how far the encoder's latent lies from a better one for the
        current decoder (for training): the mean squared distance, in quantiser levels, between the
        encoder's bounded latent and the one that `steps` Adam steps of size `lr` on this batch's
        squared error reach, starting from it, through the decoder and the rounding (straight-through).
        The search moves the latent only; the distance's gradient reaches the encoder alone."""
        bound = self._require_quantizer("the latent search").bound
        out, h, x = self._forward(video)
        target = self.search_latent(h.detach(), x, steps, lr)
        gap = (bound(h.float().movedim(1, -1)) - bound(target.movedim(1, -1))).square().mean()
        return out, gap

    def encode_searched(self, video: torch.Tensor, steps: int = 50, lr: float = REFINE_LR) -> torch.Tensor:
        """Like `encode` (mode "full", FSQ models), but from the encoder's latent improved by `steps`
        Adam steps on the squared error of the whole clip's decode: how far the encoder lies from the
        best latent for its own decoder. A measuring tool: a latent frame moves for the frames after
        it too, so these tokens are not causal (`encode(..., refine_steps=)` keeps them causal)."""
        quantizer = self._require_quantizer("the latent search")
        x, batch = self._frames(video)
        x, _ = _centre_pad(x.to(device=self.device, dtype=self.dtype), self.config.spatial_compression)
        with torch.no_grad():
            h = self._latent(x)
        with torch.enable_grad():
            found = self.search_latent(h, x, steps, lr)
        _, ids = quantizer.quantize(found)
        return self._unfold(ids, batch, channel_dim=False)

    def _require_quantizer(self, what: str) -> FSQuantizer:
        if self.quantizer is None:
            raise ValueError(f"{self.config.name}: {what} needs a discrete (FSQ) tokenizer")
        return self.quantizer

    def search_latent(self, h: torch.Tensor, x: torch.Tensor, steps: int, lr: float) -> torch.Tensor:
        """Pre-quantisation latent `h` of the (padded) input `x` -> the latent that `steps` Adam steps
        of size `lr` on the squared error of its decode reach (`_adam_search`)."""
        return _adam_search(h, partial(self._frame_error, target=x, pads=(0, 0, 0, 0), decoder=None), steps, lr)

    def refine_latent(self, h: torch.Tensor, x: torch.Tensor, pads: tuple[int, int, int, int], steps: int,
                      decoder: StreamSession | None) -> torch.Tensor:
        """Causal refinement of the pre-quantisation latent `h` of the padded input `x`: latent frame
        by latent frame, `steps` Adam steps (`_adam_search`) on the squared error of that frame's own
        decoded frames (frame 0 alone, then t each), the earlier ones fixed and carried in the
        `decoder` stream (None for image models, whose frames are independent). So each token still
        depends on its own and earlier frames only, and a video refined chunk by chunk through one
        `decoder` stream gets the tokens of one pass. Each step costs a decode of one latent frame
        and its backward: on two CPU cores ~20 s for 50 steps of a 17x256x256 clip (DV4x8x8-mill)."""
        self._require_quantizer("refine_steps")
        # Autograd inside encode's no_grad (and a caller's inference_mode); the clones leave inference mode.
        with torch.inference_mode(False), torch.enable_grad():
            h, x = h.float().clone(), x.clone()
            if decoder is None:
                return _adam_search(h, partial(self._frame_error, target=x, pads=pads, decoder=None), steps, REFINE_LR)
            found = []
            for index in range(h.shape[2]):
                n = 1 if decoder.calls == 0 else self.config.temporal_compression
                target, x = x[:, :, :n], x[:, :, n:]
                error = partial(self._frame_error, target=target, pads=pads, decoder=decoder)
                found.append(_adam_search(h[:, :, index: index + 1], error, steps, REFINE_LR))
                with torch.no_grad(), decoder.active():  # the kept latent frame enters the stream
                    self._decode_raw(self._quantize(found[-1])[0])
                decoder.calls += 1
            return torch.cat(found, dim=2)

    def _frame_error(self, z: torch.Tensor, target: torch.Tensor, pads: tuple[int, int, int, int],
                     decoder: StreamSession | None) -> torch.Tensor:
        """Squared error of `z`'s decode against `target`, spatial padding cropped; through `decoder`'s
        stream without advancing it."""
        codes, _ = self._quantize(z)
        if decoder is None:
            out = self._decode_raw(codes)
        else:
            with decoder.trial(), decoder.active():
                out = self._decode_raw(codes)
        return (_crop(out, pads).float() - _crop(target, pads).float()).square().mean()

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """Differentiable reconstruction [same shape as `video`] for training."""
        return self.forward_with_latents(video).reconstruction


def refine_problem(tok: object) -> str | None:
    """Why `tok` (a loaded tokenizer of any backend) cannot run `encode(..., refine_steps=)`, or None."""
    config = getattr(tok, "config", None)
    name = getattr(config, "name", "this tokenizer")
    if not getattr(config, "discrete", False):
        return f"needs a discrete (FSQ) tokenizer; {name} is continuous"
    if not isinstance(tok, CosmosTokenizer):
        return f"needs the native backend; {name} is loaded as TorchScript files"
    return None


def _adam_search(start: torch.Tensor, error: Callable[[torch.Tensor], torch.Tensor], steps: int,
                 lr: float) -> torch.Tensor:
    """`steps` Adam steps (betas 0.9 / 0.999, step size `lr`) on `error(z)` from `start`; the FSQ
    rounding inside `error` passes gradients straight through. Only z moves; the result has no
    gradient. Adam's steps do not depend on the error's scale, so a batch searches as its clips would
    one by one."""
    z = start.float().clone()
    m, v = torch.zeros_like(z), torch.zeros_like(z)
    for i in range(1, steps + 1):
        z.requires_grad_(True)
        (grad,) = torch.autograd.grad(error(z), z)
        with torch.no_grad():
            m.lerp_(grad, 0.1)
            v.lerp_(grad.square(), 0.001)
            z = z.detach() - lr * (m / (1 - 0.9**i)) / ((v / (1 - 0.999**i)).sqrt() + 1e-12)
    return z.detach()
