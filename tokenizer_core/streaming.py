"""Carry causal state across calls, so a long video can be processed chunk by chunk.

Modules that look back in time (causal convs, average pools, the patcher's first-frame repeat,
temporal attention) hold a `_stream` attribute: None for an ordinary full pass, a dict while
streaming. Inside `stream_state(...)` every such module gets a fresh dict and keeps there the
input frames it has not consumed yet (at most kernel-1 frames per conv) and, for temporal
attention, the keys/values of all past frames at the bottleneck resolution. Chunked output then
equals one full pass up to float rounding.

The state lives on the module instances: one stream at a time per model object.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


def _stateful(modules: tuple[nn.Module, ...]) -> list[nn.Module]:
    return [m for root in modules for m in root.modules() if hasattr(type(m), "_stream")]


@contextmanager
def stream_state(*modules: nn.Module) -> Iterator[None]:
    """Within the block, calls to `modules` continue one causal stream; state is dropped on exit."""
    stateful = _stateful(modules)
    if any(getattr(m, "_stream", None) is not None for m in stateful):
        raise RuntimeError("this tokenizer is already streaming; use one stream per model object")
    for m in stateful:
        setattr(m, "_stream", {})  # noqa: B010 (an attribute, not a module or buffer)
    try:
        yield
    finally:
        for m in stateful:
            setattr(m, "_stream", None)  # noqa: B010
