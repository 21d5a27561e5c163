"""Carry causal state across calls, so a long video can be processed chunk by chunk.

Modules that look back in time (causal convs, average pools, the patcher's first-frame repeat,
temporal attention) hold a `_stream` attribute: None for an ordinary full pass, a dict while
streaming. A `StreamSession` owns one such dict per module and lends them to the modules only
while one of its calls runs (`with session.active():`); there they keep the input frames they
have not consumed yet (at most kernel-1 frames per conv) and, for temporal attention, the
normalised input of all past frames at the bottleneck resolution. Chunked output then equals one
full pass up to float rounding.

Between calls the state lives in the session, not on the modules: one model object can serve
several streams in turn (a tokenizer actor serving whole videos for several shard tasks), one
active at a time. `stream_state(...)` is a block-scoped session for a single stream.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


def _stateful(modules: tuple[nn.Module, ...]) -> list[nn.Module]:
    return [m for root in modules for m in root.modules() if hasattr(type(m), "_stream")]


class StreamSession:
    """The causal state of one stream through `modules`, parked between calls."""

    def __init__(self, *modules: nn.Module):
        self._modules = _stateful(modules)
        self._state: list[dict] = [{} for _ in self._modules]
        self.calls = 0  # completed calls: 0 means the next chunk is the stream's first
        self.decoder: StreamSession | None = None  # an encode stream's refinement decoder (refine_steps)

    @contextmanager
    def active(self) -> Iterator[None]:
        """Lend this stream's state to the modules for one call."""
        if any(getattr(m, "_stream", None) is not None for m in self._modules):
            raise RuntimeError("this tokenizer is already streaming; use one stream per model object")
        for m, state in zip(self._modules, self._state, strict=True):
            setattr(m, "_stream", state)  # noqa: B010 (an attribute, not a module or buffer)
        try:
            yield
        finally:
            for m in self._modules:
                setattr(m, "_stream", None)  # noqa: B010


    @contextmanager
    def trial(self) -> Iterator[None]:
        """Calls within the block leave the stream as they found it (to try inputs for its next
        chunk). The modules replace their state's tensors rather than write into them and only
        append to its lists, so copying the dicts and lists is enough."""
        saved = [{k: list(v) if isinstance(v, list) else v for k, v in state.items()} for state in self._state]
        try:
            yield
        finally:
            self._state = saved


@contextmanager
def stream_state(*modules: nn.Module) -> Iterator[None]:
    """Within the block, calls to `modules` continue one causal stream; state is dropped on exit."""
    with StreamSession(*modules).active():
        yield
