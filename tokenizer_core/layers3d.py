"""Causal 3D building blocks of the Cosmos-style video tokenizer.

Shapes: x [B, C, T, H, W] throughout. Module and parameter names follow NVIDIA's Cosmos Tokenizer
(`cosmos_tokenizer/modules/layers3d.py`) so that official state dicts load unchanged:
`CausalConv3d.conv3d`, `*.norm` (GroupNorm), factorized convs as `Sequential` indices `.0`
(1x3x3 spatial) and `.1` (3x1x1 temporal), samplers `conv1..3` (attention: attention3d.py).

Causality: every temporal operator only looks back. The front of the clip is padded by repeating
its first frame, norms are per frame, temporal attention is lower-triangular. That makes a
streaming mode possible: a module whose `_stream` attribute is a dict keeps the frames it has not
consumed yet (and temporal attention its past frames) there, so that a video fed chunk by chunk gives the same
result as one pass over the whole video (see `tokenizer_core/streaming.py`).
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from tokenizer_core import frames


def _as3(value: int | tuple[int, int, int]) -> tuple[int, int, int]:
    return value if isinstance(value, tuple) else (value, value, value)


def _channels_last(x: torch.Tensor) -> bool:
    return x.is_contiguous(memory_format=torch.channels_last_3d) and not x.is_contiguous()


def _cpu_channels_last(x: torch.Tensor) -> bool:
    """Where the GEMM / conv2d fast paths apply: they work around CPU kernel selection (on CUDA
    cuDNN handles channels-last conv3d itself)."""
    return x.device.type == "cpu" and _channels_last(x)


def cat_time(parts: list[torch.Tensor]) -> torch.Tensor:
    """torch.cat along time that keeps a channels-last layout (torch.cat would return NCDHW)."""
    ref = parts[-1]
    if not _channels_last(ref):
        return torch.cat(parts, dim=2)
    shape = list(ref.shape)
    shape[2] = sum(p.shape[2] for p in parts)
    out = torch.empty(shape, dtype=ref.dtype, device=ref.device, memory_format=torch.channels_last_3d)
    start = 0
    for p in parts:
        out[:, :, start:start + p.shape[2]] = p
        start += p.shape[2]
    return out


def pair_mean(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Average pooling with kernel = stride = 2 along `dims` (a trailing odd element is dropped, like
    F.avg_pool3d). Written with strided slices because avg_pool3d has no bf16/fp16 CPU kernel and
    returns NCDHW for channels-last input."""
    for dim in dims:
        n = x.shape[dim] // 2
        even = [slice(None)] * x.ndim
        odd = [slice(None)] * x.ndim
        even[dim], odd[dim] = slice(0, 2 * n, 2), slice(1, 2 * n, 2)
        x = (x[tuple(even)] + x[tuple(odd)]) * 0.5
    return x


def stream_window(state: dict, x: torch.Tensor, kernel: int, stride: int, front_pad: int) -> torch.Tensor:
    """Frames a temporal window op (kernel, stride) can consume now, carrying the rest to the next call.

    On the first call the stream starts with `front_pad` copies of frame 0 (the causal padding).
    x: [B, C, T, H, W] -> [B, C, T_used, H, W]; `state["tail"]` keeps the unconsumed frames.
    """
    tail = state.get("tail")
    if tail is None:
        tail = x[:, :, :1].repeat(1, 1, front_pad, 1, 1)
    buf = cat_time([tail, x]) if tail.shape[2] else x
    n_out = (buf.shape[2] - kernel) // stride + 1 if buf.shape[2] >= kernel else 0
    if n_out == 0:
        raise ValueError(
            f"streaming chunk too short: a temporal op with kernel {kernel}, stride {stride} received "
            f"{x.shape[2]} frame(s) and produced none; feed chunks of a multiple of the temporal compression"
        )
    state["tail"] = buf[:, :, n_out * stride:].clone()
    return buf[:, :, : (n_out - 1) * stride + kernel]


def replicate_first(x: torch.Tensor, n: int) -> torch.Tensor:
    """Prepend n copies of the first frame: x [B, C, T, H, W] -> [B, C, T+n, H, W]."""
    if n == 0:
        return x
    return cat_time([x[:, :, :1].expand(-1, -1, n, -1, -1), x])


class CausalConv3d(nn.Module):
    """Conv3d with causal time padding (first frame repeated) and zero spatial padding."""

    _stream: dict | None = None

    def __init__(self, chan_in: int, chan_out: int, kernel_size: int | tuple[int, int, int] = 3,
                 stride: int = 1, time_stride: int = 1, padding: int = 1) -> None:
        super().__init__()
        kt, kh, kw = _as3(kernel_size)
        self.kernel_t, self.time_stride = kt, time_stride
        # Official padding rule: dilation*(kt-1) + (1 - time_stride) frames in front.
        self.time_pad = (kt - 1) + (1 - time_stride)
        # Spatial zero padding is the conv's own, same numbers as the official explicit F.pad.
        self.conv3d = nn.Conv3d(chan_in, chan_out, (kt, kh, kw), stride=(time_stride, stride, stride),
                                padding=(0, padding, padding))
        self.pointwise_in_space = kh == kw == 1 and stride == 1
        self.per_frame = kt == 1 and time_stride == 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_tracing():
            # The fast paths below loop and slice with Python ints, which a trace would freeze to
            # the example's shape; a plain conv3d keeps traced files valid for any input size.
            return self.conv3d(replicate_first(x, self.time_pad))
        streaming = self._stream is not None and (self.kernel_t > 1 or self.time_stride > 1)
        if (self.pointwise_in_space and self.time_stride == 1 and _cpu_channels_last(x)
                and not torch.is_grad_enabled()):
            # inference only: the per-item in-place products save memory, but under autograd each
            # becomes a slice-copy node (a training step ran 1.4x slower through them than one padded gemm)
            if not streaming:
                return self._causal_gemm(x)  # the causal padding stays implicit: no padded copy
            return self._causal_gemm(x, self._carry_left(x))  # nor a concatenation with the carried frames
        if streaming:
            x = stream_window(self._stream, x, self.kernel_t, self.time_stride, self.time_pad)  # type: ignore[arg-type]
        else:
            x = replicate_first(x, self.time_pad)
        if self.pointwise_in_space and _cpu_channels_last(x):
            return self._window_gemm(x)
        if self.per_frame and _cpu_channels_last(x):
            return self._frame_conv2d(x)
        return self.conv3d(x)

    def _carry_left(self, x: torch.Tensor) -> torch.Tensor | None:
        """Streaming at stride 1: the kt-1 input frames before this chunk (None at the stream start,
        where they are copies of frame 0), and keep this chunk's last kt-1 frames for the next call.
        Same state as `stream_window` (its unconsumed tail), so chunks may take either path."""
        state = self._stream
        assert state is not None
        left, p = state.get("tail"), self.kernel_t - 1
        if x.shape[2] >= p:
            recent = x
        else:  # a chunk shorter than the context: it follows the carried frames (or frame 0's copies)
            recent = replicate_first(x, p - x.shape[2]) if left is None else cat_time([left, x])
        state["tail"] = recent[:, :, -p:].clone(memory_format=torch.channels_last_3d)
        return left

    # PyTorch sends convs whose kernel is 1x1 in space to a slow unfold-based kernel at one thread
    # (and for small inputs always). As matrix products over channels on channels-last frames
    # [B, T, H, W, C] they run at BLAS speed, accumulate in place (addmm's backward does not need
    # its output) and keep the layout. Outputs: [B, O, T_out, H, W], channels-last.
    def _causal_gemm(self, x: torch.Tensor, left: torch.Tensor | None = None) -> torch.Tensor:
        """Stride-1 causal kt x 1 x 1 conv. The kt-1 frames before x are `left` [B, C, kt-1, H, W],
        or copies of frame 0 when None (never built: frame 0 enters as one more product)."""
        frames = x.permute(0, 2, 3, 4, 1)  # [B, T, H, W, C]
        b, t, h, w, c = frames.shape
        weight = self.conv3d.weight[:, :, :, 0, 0]  # [O, C, kt]; tap kt-1 is the current frame
        p = self.kernel_t - 1
        out = F.linear(frames, weight[:, :, p], self.conv3d.bias)  # [B, T, H, W, O]
        before = None if left is None else left.permute(0, 2, 3, 4, 1)  # [B, kt-1, H, W, C]
        for k in range(p):
            lag = p - k  # tap k looks `lag` frames back
            n = min(lag, t)  # output frames whose tap k falls before x
            for i in range(b):
                rows_out, rows_in = out[i].view(t * h * w, -1), frames[i].reshape(t * h * w, c)
                if t > lag:
                    rows_out[lag * h * w:].addmm_(rows_in[: (t - lag) * h * w], weight[:, :, k].t())
                if before is None:
                    out[i, :n] += F.linear(frames[i, :1], weight[:, :, k])  # [1, H, W, O]
                else:  # output frame j reads frame p - lag + j of `left`
                    rows_out[: n * h * w].addmm_(before[i, k: k + n].reshape(n * h * w, c), weight[:, :, k].t())
        return out.permute(0, 4, 1, 2, 3)

    def _window_gemm(self, x: torch.Tensor) -> torch.Tensor:
        """kt x 1 x 1 conv (any time stride) over an already padded / windowed x."""
        kt, st = self.kernel_t, self.time_stride
        n_out = (x.shape[2] - kt) // st + 1
        frames = x.permute(0, 2, 3, 4, 1)  # [B, T_pad, H, W, C]
        b, _, h, w, c = frames.shape
        rows = b * n_out * h * w
        weight = self.conv3d.weight[:, :, :, 0, 0]
        taps = [frames[:, k: k + st * (n_out - 1) + 1: st].reshape(rows, c) for k in range(kt)]
        out = F.linear(taps[0], weight[:, :, 0], self.conv3d.bias)
        for k in range(1, kt):
            out.addmm_(taps[k], weight[:, :, k].t())
        return out.view(b, n_out, h, w, -1).permute(0, 4, 1, 2, 3)

    def _frame_conv2d(self, x: torch.Tensor) -> torch.Tensor:
        """A 1 x kh x kw conv as a channels-last conv2d over all frames (views, no copies): keeps the
        layout and oneDNN's kernel whatever the thread count. x: [B, C, T, H, W] -> [B, O, T, H', W']."""
        b, t = x.shape[0], x.shape[2]
        frames = x.transpose(1, 2).flatten(0, 1)  # [(B T), C, H, W], channels-last 2D
        conv = self.conv3d
        out = F.conv2d(frames, conv.weight[:, :, 0], conv.bias, stride=conv.stride[1:], padding=conv.padding[1:])
        return out.unflatten(0, (b, t)).transpose(1, 2)


def _conv(conv: nn.Module, x: torch.Tensor, residual: bool = False) -> torch.Tensor:
    """conv(x) (+ x), in place frame by frame where that applies (see tokenizer_core/frames.py)."""
    if isinstance(conv, CausalConv3d) and frames.applies(x):
        return frames.conv_(conv, x, residual)
    y = conv(x)
    return y.add_(x) if residual else y


def factorized_conv(chan_in: int, chan_out: int) -> nn.Sequential:
    """A 3x3x3 conv split into a 1x3x3 spatial and a 3x1x1 causal temporal conv (names .0 / .1)."""
    return nn.Sequential(
        CausalConv3d(chan_in, chan_out, kernel_size=(1, 3, 3), padding=1),
        CausalConv3d(chan_out, chan_out, kernel_size=(3, 1, 1), padding=0),
    )


class CausalNormalize(nn.Module):
    """GroupNorm(eps=1e-6). With one group it is applied per frame (a LayerNorm over C, H, W),
    which keeps it causal; other group counts normalise over the whole clip (legacy models)."""

    def __init__(self, channels: int, num_groups: int = 1) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(num_groups=num_groups, num_channels=channels, eps=1e-6, affine=True)
        self.num_groups = num_groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.num_groups != 1:
            return self.norm(x)
        weight, bias = self.norm.weight.float(), self.norm.bias.float()
        if x.is_contiguous(memory_format=torch.channels_last_3d):
            if not torch.is_grad_enabled():
                return self._frames_inference(x, weight, bias)
            # Channels-last: each frame's (H, W, C) block is contiguous, so one fused layer_norm
            # per frame; computed in fp32 so bf16/fp16 runs normalise like fp32 ones.
            frames = x.permute(0, 2, 3, 4, 1)  # [B, T, H, W, C]
            hwc = frames.shape[2:]
            # The per-channel affine expanded to one frame lets layer_norm apply it in-kernel.
            y = F.layer_norm(frames.float(), hwc, weight.expand(hwc), bias.expand(hwc), eps=self.norm.eps)
            return y.to(x.dtype).permute(0, 4, 1, 2, 3)
        xf = x.float()
        var, mean = torch.var_mean(xf, dim=(1, 3, 4), keepdim=True, correction=0)
        y = (xf - mean) * torch.rsqrt(var + self.norm.eps)
        shape = (1, -1, 1, 1, 1)
        return (y * weight.view(shape) + bias.view(shape)).to(x.dtype)

    def _frames_inference(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """Channels-last x without autograd. fp32 on CPU: group_norm over frames, whose channels-last
        kernel applies the affine in-kernel (faster than layer_norm here). Otherwise layer_norm in
        fp32 and the affine in place (expanding it to a frame for layer_norm costs 2 frames of memory)."""
        if x.device.type == "cpu" and x.dtype == torch.float32:
            frames = x.transpose(1, 2).flatten(0, 1)  # [(B T), C, H, W], channels-last 2D
            y = F.group_norm(frames, 1, weight, bias, self.norm.eps)
            return y.unflatten(0, (x.shape[0], x.shape[2])).transpose(1, 2)
        frames = x.permute(0, 2, 3, 4, 1)  # [B, T, H, W, C]
        y = F.layer_norm(frames.float(), frames.shape[2:], eps=self.norm.eps)
        return torch.addcmul(bias, y, weight, out=y).to(x.dtype).permute(0, 4, 1, 2, 3)


class CausalResnetBlockFactorized3d(nn.Module):
    """norm1 -> SiLU -> conv1 -> norm2 -> SiLU -> dropout -> conv2, plus a 1x1x1 shortcut if C changes."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0, num_groups: int = 1) -> None:
        super().__init__()
        self.norm1 = CausalNormalize(in_channels, num_groups=1)
        self.conv1 = factorized_conv(in_channels, out_channels)
        self.norm2 = CausalNormalize(out_channels, num_groups=num_groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = factorized_conv(out_channels, out_channels)
        self.nin_shortcut: nn.Module = (
            CausalConv3d(in_channels, out_channels, kernel_size=1, padding=0)
            if in_channels != out_channels else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In-place SiLU only without autograd (its backward needs the input). Residual adds go into
        # the fresh conv output in place either way (a conv's backward does not need its output).
        if torch.is_grad_enabled():
            h = self.conv1(F.silu(self.norm1(x)))
            h = self.conv2(self.dropout(F.silu(self.norm2(h))))
            return h.add_(self.nin_shortcut(x))
        if frames.applies(x):
            return self._forward_in_place(x)
        # Inference elsewhere: each intermediate is released as soon as the next one exists
        # (calling the Sequential would keep its input alive until its last conv).
        h = F.silu(self.norm1(x), inplace=True)
        for conv in self.conv1:
            h = conv(h)
        h = self.dropout(F.silu(self.norm2(h), inplace=True))
        for conv in self.conv2:
            h = conv(h)
        return h.add_(self.nin_shortcut(x))

    def _forward_in_place(self, x: torch.Tensor) -> torch.Tensor:
        """Inference on CPU with two activations alive (x and h): see tokenizer_core/frames.py."""
        spatial1, temporal1 = cast(tuple[CausalConv3d, CausalConv3d], tuple(self.conv1))
        if spatial1.conv3d.in_channels == spatial1.conv3d.out_channels:
            h = frames.conv_(spatial1, F.silu(self.norm1(x), inplace=True))
        else:  # norm and conv frame by frame: the normalised x never exists whole
            h = frames.map_frames(lambda f: spatial1(F.silu(self.norm1(f), inplace=True)), x)
        h = frames.conv_(temporal1, h)
        h = F.silu(frames.norm_(self.norm2, h), inplace=True)
        for conv in self.conv2:
            h = frames.conv_(cast(CausalConv3d, conv), h)
        if isinstance(self.nin_shortcut, CausalConv3d):
            return frames.add_pointwise_(self.nin_shortcut, h, x)
        return h.add_(x)


class CausalHybridDownsample3d(nn.Module):
    """Spatial: pad (0,1,0,1), 1x3x3 stride-2 conv + 1x2x2 average pool, summed. Temporal: repeat the
    first frame, 3x1x1 stride-2 causal conv + 2x1x1 average pool, summed. Then a 1x1x1 conv."""

    _stream: dict | None = None

    def __init__(self, channels: int, spatial_down: bool, temporal_down: bool, pruned: bool = False) -> None:
        super().__init__()
        keep = not pruned
        self.spatial_down, self.temporal_down = spatial_down, temporal_down
        self.conv1 = (CausalConv3d(channels, channels, (1, 3, 3), stride=2, padding=0)
                      if spatial_down or keep else nn.Identity())
        self.conv2 = (CausalConv3d(channels, channels, (3, 1, 1), time_stride=2, padding=0)
                      if temporal_down or keep else nn.Identity())
        self.conv3 = (CausalConv3d(channels, channels, 1, padding=0)
                      if spatial_down or temporal_down or keep else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.spatial_down and not self.temporal_down:
            return x
        if self.spatial_down:
            if frames.applies(x):  # frame by frame: the padded copy never exists whole
                x = frames.map_frames(self._spatial, x)
            else:
                x = self._spatial(x)
        if self.temporal_down:
            x = self._temporal(x)
        return _conv(self.conv3, x)

    def _spatial(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (0, 1, 0, 1, 0, 0))
        return self.conv1(x).add_(pair_mean(x, (3, 4)))

    def _temporal(self, x: torch.Tensor) -> torch.Tensor:
        if self._stream is None:
            x = replicate_first(x, 1)
            return self.conv2(x).add_(pair_mean(x, (2,)))
        if not self._stream.get("started"):
            x = replicate_first(x, 1)
            self._stream["started"] = True
        return self.conv2(x).add_(pair_mean(stream_window(self._stream, x, 2, 2, 0), (2,)))


class CausalHybridUpsample3d(nn.Module):
    """Temporal: repeat each frame twice, drop the first, 3x1x1 causal conv + residual. Spatial:
    nearest x2, 1x3x3 conv + residual. Then a 1x1x1 conv."""

    _stream: dict | None = None

    def __init__(self, channels: int, spatial_up: bool, temporal_up: bool, pruned: bool = False) -> None:
        super().__init__()
        keep = not pruned
        self.spatial_up, self.temporal_up = spatial_up, temporal_up
        self.conv1 = (CausalConv3d(channels, channels, (3, 1, 1), padding=0)
                      if temporal_up or keep else nn.Identity())
        self.conv2 = (CausalConv3d(channels, channels, (1, 3, 3), padding=1)
                      if spatial_up or keep else nn.Identity())
        self.conv3 = (CausalConv3d(channels, channels, 1, padding=0)
                      if spatial_up or temporal_up or keep else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.spatial_up and not self.temporal_up:
            return x
        if self.temporal_up:
            first = self._stream is None or not self._stream.get("started")
            if self._stream is not None:
                self._stream["started"] = True
            # 1 + k frames -> 1 + 2k (the official "time_factor" of 1 for a single frame gives the same).
            x = F.interpolate(x, scale_factor=(2.0, 1.0, 1.0), mode="nearest")  # = repeat_interleave(2), keeps layout
            x = x[:, :, 1:] if first else x
            x = _conv(self.conv1, x, residual=True)
        if self.spatial_up:
            x = F.interpolate(x, scale_factor=(1.0, 2.0, 2.0), mode="nearest")
            x = _conv(self.conv2, x, residual=True)
        return _conv(self.conv3, x)
