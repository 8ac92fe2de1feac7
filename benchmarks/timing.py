"""Wall-time helpers the benchmarks share: a call timed several times, its median or its best, and its result."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def timed_calls(function: Callable[[], T], repeats: int) -> tuple[list[float], T]:
    """Wall seconds of each of `repeats` calls, and the last call's result."""
    seconds, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        seconds.append(time.perf_counter() - started)
    return seconds, result


def median_s(function: Callable[[], object], repeats: int) -> float:
    """Median wall seconds over `repeats` calls (robust on a shared, noisy machine)."""
    return statistics.median(timed_calls(function, repeats)[0])


def best_of(repeats: int, function: Callable[[], T]) -> tuple[float, T]:
    """Smallest wall seconds over `repeats` calls, and the last call's result."""
    seconds, result = timed_calls(function, repeats)
    return min(seconds), result
