"""petct.gpus: the GPUs CUDA_VISIBLE_DEVICES gives this process, and the machine's names for local workers."""
from __future__ import annotations

import pytest

from petct.gpus import local_gpu_ids, visible_gpus


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
