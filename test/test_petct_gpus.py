"""petct.gpus: the machine's GPUs as nvidia-smi lists them, those CUDA_VISIBLE_DEVICES gives this process, and the
machine's names for local workers."""
from __future__ import annotations

import os
import stat

import pytest

from petct.gpus import gpu_count, local_gpu_ids, visible_gpus


@pytest.mark.parametrize("value, devices", [(None, None), ("1", ["1"]), ("0,2", ["0", "2"]), (" 3 , 1", ["3", "1"]),
                                            ("", []), ("-1", []), ("1,-1,2", ["1"]), ("GPU-8f3a", ["GPU-8f3a"])])
def test_visible_gpus_reads_cuda_visible_devices_as_cuda_does(monkeypatch, value, devices):
    if value is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", value)
    assert visible_gpus() == devices


@pytest.mark.parametrize("value, count, ids", [(None, 3, ["0", "1", "2"]), (None, 0, []), ("2,3", 2, ["2", "3"]),
                                               ("GPU-a,GPU-b", 2, ["GPU-a", "GPU-b"]), ("", 0, [])])
def test_local_gpu_ids_are_the_machines_names_of_the_gpus_this_process_sees(monkeypatch, value, count, ids):
    if value is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", value)
    assert local_gpu_ids(count) == ids


@pytest.mark.parametrize("listing, status, count", [
    ("GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1)\nGPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-2)\n", 0, 2),
    ("  MIG 1g.10gb Device 0: (UUID: MIG-1)\nGPU 0: NVIDIA A100 (UUID: GPU-3)\n", 0, 1),
    ("", 0, 0), ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver\n", 9, 0)])
def test_gpu_count_reads_nvidia_smi_once_per_process(monkeypatch, tmp_path, listing, status, count):
    calls = tmp_path / "calls"
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    (tmp_path / "listing").write_text(listing)
    fake.write_text(f"#!/bin/sh\necho called >> {calls}\ncat {tmp_path / 'listing'}\nexit {status}\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    gpu_count.cache_clear()
    try:
        assert [gpu_count() for _ in range(3)] == [count] * 3
        assert calls.read_text().splitlines() == ["called"]  # asked per job, run once
    finally:
        gpu_count.cache_clear()


def test_gpu_count_is_zero_without_nvidia_smi(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    gpu_count.cache_clear()
    try:
        assert gpu_count() == 0
    finally:
        gpu_count.cache_clear()
