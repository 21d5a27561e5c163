"""In-place inference, one frame at a time, for the video model's causal layers (CPU, no autograd).

Shapes: x [B, C, T, H, W], channels-last (NDHWC), so each frame x[i, :, f] is a contiguous
[H, W, C] block and its rows [(H W), C] are a view.

Why: at full resolution one activation is large (256 channels x 5 frames x 64^2 = 20 MiB for a
17x256^2 clip) and an out-of-place residual block keeps three alive at once: its input (for the
residual), a conv's input and that conv's output. Every op of the block either works per frame
(norms, 1xkxk and 1x1x1 convs) or looks only back in time (the causal kt x 1 x 1 convs), so its
output can overwrite its input frame by frame, with one frame of scratch: a block then keeps two
activations alive. The causal convs go through the frames from last to first, so each output frame
overwrites an input frame that no later-computed output needs. Results are those of the
out-of-place layers up to float rounding (the same products, summed in the same order).

`applies(x)` says when these paths are used; otherwise the callers run the layers out of place.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:  # layers3d imports this module
    from tokenizer_core.layers3d import CausalConv3d, CausalNormalize


def applies(x: torch.Tensor) -> bool:
    """Inference on CPU with a channels-last x (what the in-place loops assume)."""
    return (not torch.is_grad_enabled() and not torch.jit.is_tracing() and x.device.type == "cpu"
            and x.is_contiguous(memory_format=torch.channels_last_3d))


def _frames(x: torch.Tensor) -> Iterator[torch.Tensor]:
    """Each frame of x as a [1, C, 1, H, W] view (still channels-last)."""
    for i in range(x.shape[0]):
        for f in range(x.shape[2]):
            yield x[i: i + 1, :, f: f + 1]


def _rows(frame: torch.Tensor) -> torch.Tensor:
    """[1, C, 1, H, W] channels-last frame -> its [(H W), C] rows (a view)."""
    return frame.permute(0, 2, 3, 4, 1).reshape(-1, frame.shape[1])


def norm_(norm: CausalNormalize, x: torch.Tensor) -> torch.Tensor:
    """x <- norm(x) for a per-frame CausalNormalize (one group), frame by frame."""
    for frame in _frames(x):
        frame.copy_(norm(frame))
    return x


def map_frames(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """A new tensor holding fn(frame) for every frame of x (fn: [1, C, 1, H, W] -> [1, C', 1, H', W'])."""
    out: torch.Tensor | None = None
    b, t = x.shape[0], x.shape[2]
    for n, frame in enumerate(_frames(x)):
        y = fn(frame)
        if out is None:
            out = torch.empty((b, y.shape[1], t, *y.shape[3:]), dtype=y.dtype, device=y.device,
                              memory_format=torch.channels_last_3d)
        i, f = divmod(n, t)
        out[i: i + 1, :, f: f + 1].copy_(y)
        del y
    assert out is not None
    return out


def add_pointwise_(conv: CausalConv3d, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """h += conv(x) for a 1x1x1 CausalConv3d, one frame of conv(x) at a time."""
    weight, bias = conv.conv3d.weight[:, :, 0, 0, 0], conv.conv3d.bias
    for frame_h, frame_x in zip(_frames(h), _frames(x), strict=True):
        _rows(frame_h).add_(F.linear(_rows(frame_x), weight, bias))
    return h


def conv_(conv: CausalConv3d, x: torch.Tensor, residual: bool = False) -> torch.Tensor:
    """x <- conv(x) (+ x when `residual`) for a stride-1 CausalConv3d with as many outputs as inputs:
    1xkxk spatial, 1x1x1 pointwise, or causal kt x 1 x 1 temporal (streaming state honoured)."""
    weight, bias = conv.conv3d.weight, conv.conv3d.bias
    if conv.kernel_t > 1:
        return _temporal_(conv, x, residual)
    spatial = not conv.pointwise_in_space
    for frame in _frames(x):
        if spatial:
            y = F.conv2d(frame[:, :, 0], weight[:, :, 0], bias, padding=conv.conv3d.padding[1:]).unsqueeze(2)
            if residual:
                y.add_(frame)
            frame.copy_(y)
        else:
            rows = _rows(frame)
            y = F.linear(rows, weight[:, :, 0, 0, 0], bias)
            rows.copy_(y.add_(rows) if residual else y)
    return x


def _temporal_(conv: CausalConv3d, x: torch.Tensor, residual: bool) -> torch.Tensor:
    """Causal kt x 1 x 1 conv in place, last frame first. Before the clip start the taps read the
    streamed-in frames (`left`) or, at the start of a stream or clip, copies of frame 0."""
    left = conv._carry_left(x) if conv._stream is not None else None  # taken before x is overwritten
    p, t = conv.kernel_t - 1, x.shape[2]
    weight = conv.conv3d.weight[:, :, :, 0, 0]  # [O, C, kt]; tap kt-1 is the current frame
    for i in range(x.shape[0]):
        rows = [_rows(x[i: i + 1, :, f: f + 1]) for f in range(t)]
        before = [] if left is None else [_rows(left[i: i + 1, :, f: f + 1]) for f in range(p)]
        for f in reversed(range(t)):
            y = F.linear(rows[f], weight[:, :, p], conv.conv3d.bias)
            for k in range(p):
                src = f - (p - k)
                tap = rows[src] if src >= 0 else (rows[0] if left is None else before[p + src])
                y.addmm_(tap, weight[:, :, k].t())
            if residual:
                y.add_(rows[f])
            rows[f].copy_(y)
    return x
