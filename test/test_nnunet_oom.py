"""The engine's GPU fallbacks, emulated on the CPU: out-of-memory retries, compiler failures, padded batches."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from algorithm import failures
from algorithm.engine_contract import EngineOptions
from algorithm.nnunet import NnUNetEngine, compiled
from algorithm.nnunet import engine as engine_module
from algorithm.nnunet.oom import on_host_if_out_of_memory, retry_out_of_memory
from algorithm.nnunet.sliding_window import SlidingWindow, WindowRun
from nnunet_helpers import require_nnunetv2

require_nnunetv2()
torch.set_num_threads(2)


@pytest.fixture(scope="module")
def study(nnunet_case):
    return nnunet_case.suv, nnunet_case.ct, nnunet_case.spacing


@pytest.fixture(scope="module")
def model(nnunet_case):
    return nnunet_case.trainer_folder

# What running out of GPU memory looks like besides torch.OutOfMemoryError: cuDNN and cuBLAS failing to
# allocate their handles or workspaces raise plain RuntimeErrors.
ALLOCATION_FAILURES = [
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"),
    RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
    RuntimeError("cuDNN Frontend error: [cudnn_frontend] Error: NOT_ENOUGH_WORKSPACE"),
]


class _MemoryLimited(torch.nn.Module):
    """Wraps a network; a batch larger than `max_batch` fails with `error`, for the first `failures` such calls."""

    def __init__(self, inner: torch.nn.Module, *, max_batch: int, error: BaseException, failures: int = 10**9):
        super().__init__()
        self.inner = inner
        self.max_batch = max_batch
        self.error = error
        self.failures_left = failures
        self.calls: list[int] = []

    def forward(self, x):
        self.calls.append(x.shape[0])
        if x.shape[0] > self.max_batch and self.failures_left > 0:
            self.failures_left -= 1
            raise self.error
        return self.inner(x)


def _conv():
    torch.manual_seed(3)
    return torch.nn.Conv3d(2, 2, 1)


@pytest.mark.parametrize("error", ALLOCATION_FAILURES, ids=["torch", "cudnn", "cublas", "workspace"])
def test_allocation_failures_are_out_of_memory_everywhere(error):
    """One predicate: the exit code, and the sliding window's smaller batches, for each kind of failure."""
    assert failures.is_out_of_memory(error)
    assert failures.describe_failure(error)[0] == failures.EXIT_MEMORY
    data = torch.from_numpy(np.random.default_rng(1).normal(size=(2, 12, 14, 16)).astype(np.float32))
    kwargs = dict(patch_size=(8, 8, 8), step_size=0.5, device=torch.device("cpu"), autocast=False)
    with torch.no_grad():
        expected = SlidingWindow(tile_batch=1, **kwargs).predict_logits(_conv(), data, [()], WindowRun(),
                                                                          num_classes=2)
        run = WindowRun()
        got = SlidingWindow(tile_batch=4, **kwargs).predict_logits(_MemoryLimited(_conv(), max_batch=1, error=error),
                                                                   data, [()], run, num_classes=2)
    assert run.events == ["cpu out of memory: tile batch -> 2", "cpu out of memory: tile batch -> 1"]
    assert torch.allclose(got.float(), expected.float(), rtol=0, atol=4e-3)


@pytest.mark.parametrize("error", [RuntimeError("cuDNN error: CUDNN_STATUS_BAD_PARAM"),
                                   RuntimeError("CUDA error: an illegal memory access was encountered")])
def test_other_cuda_errors_are_not_out_of_memory(error):
    assert not failures.is_out_of_memory(error)
    assert failures.describe_failure(error)[0] == failures.EXIT_INTERNAL


def test_retry_gives_way_until_nothing_is_left():
    """Each failure frees the cache and asks for room; with none left the last error is raised, traceback-free."""
    calls, room = [], [3, 2]

    def call():
        calls.append(1)
        raise torch.OutOfMemoryError("CUDA out of memory")

    events: list[str] = []
    with pytest.raises(torch.OutOfMemoryError) as info:
        retry_out_of_memory(call, device=torch.device("cpu"), events=events,
                            give_way=lambda: f"batch -> {room.pop()}" if room else None)
    assert len(calls) == 3 and events == ["cpu out of memory: batch -> 2", "cpu out of memory: batch -> 3"]
    frames, tb = [], info.value.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    assert "call" not in frames  # the failed attempt's frames (and the tensors they hold) are gone
    with pytest.raises(ValueError):  # anything else is not retried
        retry_out_of_memory(lambda: int("x"), device=torch.device("cpu"), events=events, give_way=lambda: "never")


class _DeviceTensor:
    """Stands for a tensor on a GPU (the tests have none): its device says cuda, .cpu() gives the host copy."""

    def __init__(self, host: torch.Tensor):
        self.host = host
        self.device = torch.device("cuda")

    def cpu(self) -> torch.Tensor:
        return self.host.clone()


def test_late_full_volume_work_moves_to_the_host_when_the_device_is_full():
    volume = torch.randn(2, 5, 6, 7)

    def finite(t):
        if t.device.type != "cpu":
            raise RuntimeError("CUDA error: out of memory")
        return bool(torch.isfinite(t).all())

    events: list[str] = []
    result, used = on_host_if_out_of_memory(finite, _DeviceTensor(volume), events=events, what="finiteness check")
    assert result is True and used.device.type == "cpu" and torch.equal(used, volume)
    assert events == ["cuda out of memory: finiteness check on the host"]
    # Nothing to fall back to when the tensor is on the host already, and other errors are not absorbed.
    with pytest.raises(RuntimeError, match="out of memory"):
        on_host_if_out_of_memory(lambda t: finite(_DeviceTensor(t)), volume, events=events, what="x")
    with pytest.raises(ZeroDivisionError):
        on_host_if_out_of_memory(lambda t: 1 / 0, _DeviceTensor(volume), events=events, what="x")


def test_engine_runs_its_late_allocations_through_the_host_fallback(model, study, monkeypatch):
    pet, ct, spacing = study
    seen = []

    def spy(compute, tensor, *, events, what):
        seen.append(what)
        return on_host_if_out_of_memory(compute, tensor, events=events, what=what)

    monkeypatch.setattr(engine_module, "on_host_if_out_of_memory", spy)
    options = EngineOptions(device="cpu", use_mirroring=False, folds=(0,))
    NnUNetEngine.from_folder(model, options=options).predict(pet=pet, ct=ct, spacing_zyx=spacing)
    assert seen == ["finiteness check", "post-processing"]


def test_cudnn_autotuning_is_on_for_cuda_only(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    engine_module.tune_backends(torch.device("cpu"))
    assert torch.backends.cudnn.benchmark is False
    engine_module.tune_backends(torch.device("cuda"))
    assert torch.backends.cudnn.benchmark is True


def _engine_with_limited_memory(model, options, *, tile_batch, failures=10**9):
    engine = NnUNetEngine.from_folder(model, options=options, tile_batch=tile_batch)
    engine.network = _MemoryLimited(engine.network, max_batch=1, failures=failures,
                                    error=RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"))
    return engine


def test_time_budget_probe_shrinks_the_tile_batch_like_the_window(model, study):
    """The probe's full-batch pass is the first to meet a full device: it must retry, not crash."""
    pet, ct, spacing = study
    options = EngineOptions(device="cpu", use_mirroring=False, time_budget_s=1e6)
    engine = _engine_with_limited_memory(model, options, tile_batch=4)
    result = engine.predict(pet=pet, ct=ct, spacing_zyx=spacing)
    assert result.notes["events"][:2] == ["cpu out of memory: tile batch -> 2", "cpu out of memory: tile batch -> 1"]
    assert len(result.notes["events"]) == 2  # the folds ran with the probe's tile batch: no failure left
    assert result.notes["tile_batch"] == 1 and result.notes["folds_run"] == [0, 1]
    reference = NnUNetEngine.from_folder(model, options=options, tile_batch=1).predict(pet=pet, ct=ct,
                                                                                       spacing_zyx=spacing)
    np.testing.assert_array_equal(result.mask, reference.mask)
    np.testing.assert_allclose(result.probabilities, reference.probabilities, atol=2e-3)


def test_tile_batch_shrunk_by_a_transient_failure_is_restored_for_the_next_prediction(model, study):
    pet, ct, spacing = study
    options = EngineOptions(device="cpu", use_mirroring=False, folds=(0,))
    engine = _engine_with_limited_memory(model, options, tile_batch=4, failures=1)
    first = engine.predict(pet=pet, ct=ct, spacing_zyx=spacing)
    assert first.notes["events"] == ["cpu out of memory: tile batch -> 2"] and first.notes["tile_batch"] == 2
    second = engine.predict(pet=pet, ct=ct, spacing_zyx=spacing)
    assert "events" not in second.notes and second.notes["tile_batch"] == 4
    assert engine.describe()["tile_batch"] == 4
    np.testing.assert_array_equal(first.mask, second.mask)


class _RecordingNetwork(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = _conv()
        self.batches: list[int] = []

    def forward(self, x):
        self.batches.append(x.shape[0])
        return self.conv(x)


def test_padded_batches_give_one_shape_and_the_same_logits():
    """With a compiled network every call sees the full tile batch; the padding tiles are thrown away."""
    data = torch.from_numpy(np.random.default_rng(2).normal(size=(2, 20, 24, 28)).astype(np.float32))
    kwargs = dict(patch_size=(8, 8, 8), step_size=0.5, device=torch.device("cpu"), autocast=False, tile_batch=7)
    padded_network, plain_network = _RecordingNetwork(), _RecordingNetwork()
    run, plain_run = WindowRun(), WindowRun()
    with torch.no_grad():
        got = SlidingWindow(pad_batches=True, **kwargs).predict_logits(padded_network, data, [(), (1,)], run,
                                                                       num_classes=2)
        expected = SlidingWindow(**kwargs).predict_logits(plain_network, data, [(), (1,)], plain_run, num_classes=2)
    assert run.tiles % 7 != 0  # the last batch is a short one
    assert set(padded_network.batches) == {7} and min(plain_network.batches) < 7
    assert run.forward_passes == plain_run.forward_passes == run.tiles * 2
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-3)


class _FakeCompiler:
    """Stands for torch.compile: runs the module, but raises a compiler error on the calls numbered in `fail_on`,
    and records every batch shape it is given."""

    def __init__(self, fail_on=(), error_type=None):
        self.fail_on = set(fail_on)
        self.error_type = error_type
        self.calls: list[int] = []

    def __call__(self, module, **options):
        assert options == {"dynamic": False}

        def run(x):
            self.calls.append(x.shape[0])
            if len(self.calls) in self.fail_on:
                if self.error_type is not None:
                    raise self.error_type("CUDA out of memory. Tried to allocate 8.00 GiB")
                from torch._inductor.exc import InductorError
                raise InductorError(RuntimeError("triton: PTX compilation failed for a new shape"), None)
            return module(x)
        return run


@pytest.mark.parametrize("fail_on", [(1,), (3,)], ids=["while compiling", "inside predict"])
def test_compiler_failure_at_any_call_runs_eager(model, study, monkeypatch, fail_on):
    pet, ct, spacing = study
    compiler = _FakeCompiler(fail_on=fail_on)
    monkeypatch.setattr(compiled.torch, "compile", compiler)
    options = EngineOptions(device="cpu", use_mirroring=False, folds=(0, 1), compile=True)
    engine = NnUNetEngine.from_folder(model, options=options, tile_batch=2)
    result = engine.predict(pet=pet, ct=ct, spacing_zyx=spacing)
    notes = engine.describe()["notes"]
    assert any(n.startswith("torch.compile failed, running eager: InductorError") for n in notes)
    assert len(compiler.calls) == fail_on[0]  # no compiled call after the failure
    eager = NnUNetEngine.from_folder(model, options=dataclasses.replace(options, compile=False),
                                     tile_batch=2).predict(pet=pet, ct=ct, spacing_zyx=spacing)
    np.testing.assert_array_equal(result.mask, eager.mask)
    np.testing.assert_allclose(result.probabilities, eager.probabilities, atol=2e-3)


def test_compiled_network_sees_only_full_batches_and_keeps_compiling_after_running_out_of_memory(model, study,
                                                                                                 monkeypatch):
    """Out of memory in a compiled call is not a compiler failure: the batch shrinks and compiling goes on."""
    pet, ct, spacing = study
    compiler = _FakeCompiler(fail_on=(2,), error_type=torch.OutOfMemoryError)
    monkeypatch.setattr(compiled.torch, "compile", compiler)
    options = EngineOptions(device="cpu", use_mirroring=False, folds=(0,), compile=True)
    engine = NnUNetEngine.from_folder(model, options=options, tile_batch=4)
    assert compiler.calls == [4]  # the one tile of the warm-up is padded to the tile batch
    result = engine.predict(pet=pet, ct=ct, spacing_zyx=spacing)
    assert result.notes["events"] == ["cpu out of memory: tile batch -> 2"]
    assert set(compiler.calls[2:]) == {2} and not any("running eager" in n for n in engine.describe()["notes"])
    assert isinstance(engine.network, compiled.CompiledNetwork) and engine.network.active
