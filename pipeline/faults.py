"""Transient or permanent: the one place that decides which failures are worth another try.

Transient (the same work done again will probably succeed): storage and network errors (every
OSError, timeouts, a connection reset), a stream that ends before the size its listing
reported, throttling (HTTP 503 / SlowDown / 429), a decoder child killed by a signal (the OOM
killer's SIGKILL included), a decoder that stops answering, MemoryError in the decoder child,
CUDA out of memory, and Ray's infrastructure errors (actor or worker died, node lost, object
lost). What happens to each:

    shard  -> retried from a fresh stream with backoff (jobs/dispatch.py), up to max_attempts;
              a shard that still fails is reported failed and never recorded as done
    sample -> decoded again in a fresh child (pipeline/readers/isolation.py), once
    batch  -> a CUDA OOM batch is split in halves down to one clip (jobs/actors.py)

Permanent: anything else (a corrupt video, a bug). A bad sample becomes a dead letter at once;
a transient fault becomes permanent only when it repeats on the retry with the same
`signature` (the same truncation offset of the same shard, the same sample crashing its fresh
decoder again): then it is written down as lost, with its reason.

No Ray or torch import here: exceptions are recognised by class name along their MRO, so this
works on the wrapped errors Ray hands back (`RayTaskError(OSError)`) and in processes that
never import either.
"""

from __future__ import annotations

from typing import Any

TRANSIENT = "transient"
PERMANENT = "permanent"

# error types of pipeline.readers.decode.VideoError that a fresh decoder child may not repeat
TRANSIENT_SAMPLE_ERRORS = frozenset({"DecoderCrashed", "DecoderTimeout", "DecoderOutOfMemory"})

_TRANSIENT_NAMES = frozenset({
    "OSError", "TimeoutError", "ConnectionError", "MemoryError", "TransientFault",
    # Ray's infrastructure errors
    "RayActorError", "ActorDiedError", "ActorUnavailableError", "WorkerCrashedError", "NodeDiedError",
    "ObjectLostError", "OwnerDiedError", "ObjectFetchTimedOutError", "ObjectReconstructionFailedError",
    "GetTimeoutError", "RaySystemError", "OutOfMemoryError", "LocalRayletDiedError",
    # botocore / aiohttp errors that are not OSErrors
    "EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ClientPayloadError",
    "ServerDisconnectedError", "ResponseStreamingError", "IncompleteReadError",
    # tokenmill's own: no tokenizer actor answered a batch
    "TokenizerUnavailable",
})
_THROTTLE_MARKS = ("SlowDown", "Throttl", "TooManyRequests", "RequestLimitExceeded", "reduce your request rate",
                   "Service Unavailable", "ServiceUnavailable", "(503)", "(429)", "HTTP 503", "status 503")
THROTTLE_BACKOFF_FACTOR = 4.0  # a throttled store needs longer to recover than a dropped connection


class TransientFault(OSError):
    """A fault worth a retry, raised by tokenmill's own code. `signature` identifies where it
    happened (e.g. "TruncatedShard@1049088"), so a retry that meets the same fault again can
    tell a damaged input from a flaky connection."""

    def __init__(self, message: str, signature: str = ""):
        super().__init__(message)
        self.signature = signature

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:  # keep `signature` through pickling (Ray)
        return (type(self), (str(self), self.signature))


class StreamEndedEarly(TransientFault):
    """A shard's stream ended before the size its listing reported (a connection reset)."""


class StreamDamaged(TransientFault):
    """A shard's tar stream was damaged on this read; damage at the same offset on a retry is
    the input's own and is then recorded as a damaged shard."""


def _names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def is_throttling(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc} {exc.__cause__ or ''}"
    return any(mark in text for mark in _THROTTLE_MARKS)


def is_cuda_oom(exc: BaseException) -> bool:
    """torch.cuda.OutOfMemoryError, or a RuntimeError that says CUDA ran out of memory."""
    return "OutOfMemoryError" in _names(exc) or "CUDA out of memory" in str(exc)


def classify(exc: BaseException) -> str:
    """TRANSIENT or PERMANENT for a failure of a shard (or anything else run again whole)."""
    if _names(exc) & _TRANSIENT_NAMES or is_throttling(exc) or is_cuda_oom(exc):
        return TRANSIENT
    cause = exc.__cause__
    if cause is not None and cause is not exc:
        return classify(cause)
    return PERMANENT


def sample_error_is_transient(error_type: str) -> bool:
    """Whether a VideoError of this type is worth decoding the sample again in a fresh child."""
    return error_type in TRANSIENT_SAMPLE_ERRORS


def signature(exc: BaseException) -> str:
    """Where a fault happened ("" when it does not say): equal signatures on two attempts mean
    the fault is the input's own, not the connection's."""
    return str(getattr(exc, "signature", "") or "")


def retry_delay(exc: BaseException, failures: int, base_s: float, cap_s: float) -> float:
    """Seconds before the next attempt after `failures` failures: doubling, capped; longer when
    the store is throttling us."""
    delay = base_s * 2 ** max(0, failures - 1)
    if is_throttling(exc):
        delay *= THROTTLE_BACKOFF_FACTOR
    return min(cap_s, delay)
