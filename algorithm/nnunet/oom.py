"""Running out of device memory: try, free the cache, give way (smaller tile batch, the host), try again."""
from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch

from algorithm.failures import is_out_of_memory

T = TypeVar("T")


def release_cached_memory(device: torch.device) -> None:
    """Hand the caching allocator's free blocks back, so a retry with less can find one contiguous block."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


def attempt(call: Callable[[], T]) -> tuple[T | None, BaseException | None]:
    """(call(), None), or (None, the out-of-memory error without its traceback); other errors propagate.

    The traceback is dropped on purpose: its frames hold the failed attempt's tensors, which must be freed
    before the cache is emptied and the next attempt runs.
    """
    try:
        return call(), None
    except Exception as exc:  # noqa: BLE001 - only out-of-memory errors are kept, see below
        if not is_out_of_memory(exc):
            raise
        return None, exc.with_traceback(None)


def retry_out_of_memory(call: Callable[[], T], *, device: torch.device, give_way: Callable[[], str | None],
                        events: list[str]) -> T:
    """call() until it fits: after each out-of-memory error, give_way() makes room and says how (an event), or
    returns None when nothing is left to give up, and the error is raised."""
    while True:
        result, error = attempt(call)
        if error is None:
            return result
        release_cached_memory(device)
        event = give_way()
        if event is None:
            raise error
        events.append(f"{device.type} out of memory: {event}")


def on_host_if_out_of_memory(compute: Callable[[torch.Tensor], T], tensor: torch.Tensor, *, events: list[str],
                             what: str) -> tuple[T, torch.Tensor]:
    """compute(tensor), or, when its device runs out of memory, compute(tensor on the host).

    Returns the result and the tensor it was computed from, so the caller can go on with the host copy (and
    drop the device one).
    """
    result, error = attempt(lambda: compute(tensor))
    if error is None:
        return result, tensor
    if tensor.device.type == "cpu":
        raise error
    release_cached_memory(tensor.device)
    host = tensor.cpu()
    events.append(f"{tensor.device.type} out of memory: {what} on the host")
    return compute(host), host
