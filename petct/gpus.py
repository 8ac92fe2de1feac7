"""GPUs: how many the machine has (nvidia-smi), which this process may use (CUDA_VISIBLE_DEVICES), and how local
worker processes share them."""
from __future__ import annotations

import functools
import os
import shutil
import subprocess


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


@functools.cache  # asked per job; the machine's GPUs do not change while a command runs
def gpu_count() -> int:
    """The GPUs `nvidia-smi -L` lists (all of the machine's: it ignores CUDA_VISIBLE_DEVICES); 0 without it."""
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    if listing.returncode != 0:
        return 0
    return sum(1 for line in listing.stdout.splitlines() if line.startswith("GPU "))
