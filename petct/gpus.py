"""Which GPUs this process may use, as CUDA_VISIBLE_DEVICES says, and how local worker processes share them."""
from __future__ import annotations

import os


def visible_gpus() -> list[str] | None:
    """The GPUs this process is given by CUDA_VISIBLE_DEVICES (a Dask GPU worker's own), None when unset: all.

    As CUDA reads it: the entries up to the first invalid one (e.g. -1); an empty list means no GPU. Entries are
    indices or UUIDs of the machine's GPUs, as `nvidia-smi -L` and `docker run --gpus device=...` name them.
    """
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    devices = []
    for entry in (word.strip() for word in value.split(",")):
        if not entry or entry.startswith("-"):
            break
        devices.append(entry)
    return devices


def local_gpu_ids(count: int) -> list[str]:
    """The machine's names of the `count` GPUs this process sees (CUDA numbers them from 0 within what
    CUDA_VISIBLE_DEVICES lists), so that a worker pinned to one of them gets the GPU this process meant."""
    visible = visible_gpus()
    if visible is None:
        return [str(index) for index in range(count)]
    return visible[:count]
