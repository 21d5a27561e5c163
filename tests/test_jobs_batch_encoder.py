"""The actor's batch encoder on CPU: overlap keeps order and results, OOM splitting, batch probe,
torch.compile parity, and the loud failure of an actor that reserves a GPU torch cannot use."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

import tokenizer_core
from jobs.actors import ActorSettings, DeviceUnavailable, TokenizerWorker
from jobs.batch_encoder import (
    AUTO_CPU_BATCH,
    BatchEncoder,
    EncodeOptions,
    batch_from_probe,
    probe_batch_size,
)

NO_CUDA = not torch.cuda.is_available()


@pytest.fixture(scope="module")
def tok():
    torch.set_num_threads(1)
    return tokenizer_core.from_pretrained("DV4x8x8-tiny", init="random")


def _batches(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (int(rng.integers(1, 5)), 5, 16, 16, 3), dtype=np.uint8) for _ in range(n)]


def _serial(tok, frames: np.ndarray) -> np.ndarray:
    video = torch.from_numpy(frames).permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0
    return tok.encode(video).numpy()


def test_many_batches_in_flight_come_back_in_order_and_equal_a_serial_encode(tok):
    """map() with 3 batches in flight yields each batch's own ids, in input order, bit-equal."""
    batches = _batches(16)
    encoder = BatchEncoder(tok, EncodeOptions("cpu", depth=3))
    got = list(encoder.map(batches))
    assert len(got) == len(batches)
    for frames, ids in zip(batches, got, strict=True):
        assert ids.dtype == np.int64 and ids.shape[0] == frames.shape[0]
        np.testing.assert_array_equal(ids, _serial(tok, frames))
    assert encoder.inputs.allocated <= 3 + 1  # buffers are reused, not made per batch


def test_concurrent_encode_calls_each_get_their_own_result(tok):
    """Threads calling encode at once (as Ray's max_concurrency does) never mix up batches."""
    batches = _batches(9, seed=1)
    encoder = BatchEncoder(tok, EncodeOptions("cpu", depth=3))
    results: dict[int, np.ndarray] = {}

    def run(i: int) -> None:
        results[i] = encoder.encode(batches[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, frames in enumerate(batches):
        np.testing.assert_array_equal(results[i], _serial(tok, frames))


def test_cuda_oom_splits_the_batch_down_to_what_fits_and_remembers_it(tok):
    """A real torch.cuda.OutOfMemoryError above 2 clips: halves are retried, results unchanged."""
    calls: list[int] = []

    def small_memory_encode(video: torch.Tensor) -> torch.Tensor:
        calls.append(video.shape[0])
        if video.shape[0] > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return tok.encode(video)

    encoder = BatchEncoder(tok, EncodeOptions("cpu", depth=1))
    encoder._model_encode = small_memory_encode
    frames = np.concatenate(_batches(4, seed=2))[:7]
    np.testing.assert_array_equal(encoder.encode(frames), _serial(tok, frames))
    assert calls[0] == 7 and max(calls[1:]) <= 4 and encoder.splitter.splits >= 2
    assert encoder.splitter.limit == 2
    calls.clear()
    np.testing.assert_array_equal(encoder.encode(frames[:5]), _serial(tok, frames[:5]))
    assert calls == [2, 2, 1]  # cut to the remembered limit before trying: no further OOM


def test_one_clip_that_does_not_fit_raises_the_oom(tok):
    def no_memory(video: torch.Tensor) -> torch.Tensor:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    encoder = BatchEncoder(tok, EncodeOptions("cpu", depth=1))
    encoder._model_encode = no_memory
    with pytest.raises(torch.cuda.OutOfMemoryError):
        encoder.encode(_batches(1)[0][:1])


def test_batch_from_probe_fits_the_free_memory_with_headroom():
    mib = 2**20
    # 1 GiB fixed + 2 GiB per clip, 40 GiB free, 20% headroom: (32 - 1) / 2 -> 15 clips
    assert batch_from_probe(3 * 1024 * mib, 5 * 1024 * mib, 40 * 1024 * mib, clip_bytes=0, depth=3) == 15
    assert batch_from_probe(3 * 1024 * mib, 5 * 1024 * mib, 2 * 1024 * mib, clip_bytes=0, depth=3) == 1
    assert batch_from_probe(10, 11, 10**12, clip_bytes=0, depth=3) == 32  # capped


def test_auto_batch_on_cpu_is_the_documented_fixed_default(tok):
    size, info = probe_batch_size(BatchEncoder(tok, EncodeOptions("cpu")), (5, 16, 16))
    assert size == AUTO_CPU_BATCH and info["probed"] is False


@pytest.mark.slow  # inductor builds C++ kernels: ~30 s with a warm cache, minutes cold on 2 busy cores
@pytest.mark.timeout(1200)
def test_compiled_encode_gives_the_eager_ids(tok):
    """tokenizer.compile: torch.compile (inductor, CPU here) on a tiny tokenizer: same ids."""
    frames = _batches(1, seed=3)[0]
    eager = BatchEncoder(tok, EncodeOptions("cpu")).encode(frames)
    try:
        compiled = BatchEncoder(tok, EncodeOptions("cpu", compile=True)).encode(frames)
    except Exception as exc:  # noqa: BLE001 - no working C++ toolchain for inductor on this machine
        if "inductor" in type(exc).__module__ or "BackendCompilerFailed" in type(exc).__name__:
            pytest.skip(f"torch.compile cannot build here: {type(exc).__name__}: {str(exc)[:200]}")
        raise
    np.testing.assert_array_equal(compiled, eager)


@pytest.mark.skipif(not NO_CUDA, reason="this machine's torch has CUDA")
def test_an_actor_reserving_a_gpu_without_cuda_refuses_to_start_naming_the_build():
    """device auto + num_gpus 1 means CUDA: a CPU build of torch is an error, not a CPU fallback."""
    settings = ActorSettings("DV4x8x8-tiny", None, "random", "auto", "auto", num_gpus=1, num_cpus=1,
                             torch_threads=1)
    with pytest.raises(DeviceUnavailable) as err:
        TokenizerWorker(settings)
    message = str(err.value)
    assert f"torch {torch.__version__}" in message and "CUDA" in message
    assert "tokenizer.device: cpu" in message and "resources.gpus_per_actor: 0" in message


def test_an_explicit_cpu_device_runs_on_a_fake_gpu_node():
    """Tests on fake-GPU Ray nodes set tokenizer.device: cpu; the worker then encodes on CPU."""
    settings = ActorSettings("DV4x8x8-tiny", None, "random", "auto", "cpu", num_gpus=1, num_cpus=1,
                             torch_threads=1, batch_size=2)
    worker = TokenizerWorker(settings)
    frames = _batches(1, seed=4)[0]
    np.testing.assert_array_equal(worker.encode(frames), _serial(worker.tok, frames))
    stats = worker.stats()
    assert stats["device"] == "cpu" and stats["dtype"] == "float32" and stats["batches"] == 1
    assert 0.0 < stats["busy_s"] <= stats["alive_s"]


def _spec(**tokenizer):
    from schemas.jobspec import parse_job_spec

    return parse_job_spec({"input": {"shards": "x.tar"}, "output": {"uri": "/tmp/unused"},
                           "tokenizer": {"name": "DV4x8x8-tiny", "init": "random", **tokenizer}})


@pytest.mark.skipif(not NO_CUDA, reason="this machine's torch has CUDA")
def test_dtype_auto_resolves_to_float32_on_cpu_and_keeps_old_fingerprints():
    """Outputs made with the old default (float32) on CPU resume under the new default (auto)."""
    from jobs.preflight import resolve_device
    from pipeline.writers.fingerprint import job_fingerprint

    auto = resolve_device(_spec(), address=None)
    old = resolve_device(_spec(dtype="float32", batch_size=4), address=None)
    assert auto.tokenizer.dtype == "float32"
    assert job_fingerprint(auto, {}, "w")["digest"] == job_fingerprint(old, {}, "w")["digest"]


def test_cuda_with_no_gpu_per_actor_is_refused_before_anything_runs():
    from jobs.preflight import resolve_device
    from schemas.config import SpecError
    from schemas.jobspec import parse_job_spec

    spec = parse_job_spec({"input": {"shards": "x.tar"}, "output": {"uri": "/tmp/unused"},
                           "tokenizer": {"name": "DV4x8x8-tiny", "device": "cuda"},
                           "resources": {"gpus_per_actor": 0}})
    with pytest.raises(SpecError, match="tokenizer.device: cuda needs a GPU per actor"):
        resolve_device(spec, address=None)


def test_refine_steps_reach_the_worker_its_ids_and_the_fingerprint():
    """tokenizer.refine_steps: the spec's value reaches the actor settings; the worker's ids are
    the refined encode's (not the plain one's) for the same frames; the fingerprint names the key
    when set and is unchanged when not, so outputs made before it resume."""
    from jobs.placement import Placement, actor_settings
    from pipeline.writers.fingerprint import job_fingerprint

    placement = Placement(1, 0, 1.0, 1, 1, 2.0, 0.0)
    settings = actor_settings(_spec(refine_steps=3, device="cpu", batch_size=2), placement)
    assert settings.refine_steps == 3
    worker = TokenizerWorker(settings)
    frames = _batches(1, seed=5)[0]
    video = torch.from_numpy(frames).permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0
    refined = worker.encode(frames)
    np.testing.assert_array_equal(refined, worker.tok.encode(video, refine_steps=3).numpy())
    assert not np.array_equal(refined, _serial(worker.tok, frames))
    plain, set_ = job_fingerprint(_spec(), {}, "w"), job_fingerprint(_spec(refine_steps=3), {}, "w")
    assert "tokenizer.refine_steps" not in plain and set_["tokenizer.refine_steps"] == 3
    assert plain["digest"] == job_fingerprint(_spec(refine_steps=0), {}, "w")["digest"] != set_["digest"]
