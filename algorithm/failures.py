"""Turning any failure into one line on stderr and a non-zero exit code, never a bare traceback."""
from __future__ import annotations

import logging
import traceback

from petct.atomic import IncompleteWriteError
from petct.environment import DEBUG
from petct.errors import InputError

log = logging.getLogger("algorithm")

EXIT_INPUT = 2  # the user must fix an input, the model or an option
EXIT_MEMORY = 3  # out of RAM or GPU memory that the engine could not work around
EXIT_INTERNAL = 1  # anything else: a bug or a broken installation


def report_failure(exc: BaseException, *, debug: bool) -> int:
    """Log `exc` as one line (plus its traceback when `debug`) and return the exit code."""
    code, message = describe_failure(exc)
    if debug:
        log.error("traceback:\n%s", "".join(traceback.format_exception(exc)).rstrip())
    log.error("%s", message)
    return code


def describe_failure(exc: BaseException) -> tuple[int, str]:
    if isinstance(exc, InputError):
        return EXIT_INPUT, f"error: {exc.describe()}"
    if is_out_of_memory(exc):
        return EXIT_MEMORY, f"out of memory: {_first_line(exc)} (try --device cpu, --no-tta or fewer --folds)"
    if isinstance(exc, IncompleteWriteError):  # the disk, not the input: exit 1 like any write failure
        return EXIT_INTERNAL, f"error: {exc}"
    if isinstance(exc, OSError):
        where = f" {exc.filename}" if exc.filename else ""
        return EXIT_INPUT, f"error: cannot access{where}: {exc.strerror or exc}"
    return EXIT_INTERNAL, (f"internal error: {type(exc).__name__}: {_first_line(exc)} "
                           f"({DEBUG.name}=1 shows the traceback)")


# What a RuntimeError says when memory ran out: torch's CPU allocator, CUDA itself, and cuDNN / cuBLAS failing to
# allocate their handles or workspaces (they raise plain RuntimeErrors, not torch's OutOfMemoryError).
OUT_OF_MEMORY_MARKERS = ("out of memory", "can't allocate memory", "cudnn_status_alloc_failed",
                         "cublas_status_alloc_failed", "not_enough_workspace")


def is_out_of_memory(exc: BaseException) -> bool:
    """RAM or GPU memory exhausted: MemoryError, torch's OutOfMemoryError, or an allocator's RuntimeError."""
    # torch.OutOfMemoryError is matched by name so that this module does not import torch.
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(marker in text for marker in OUT_OF_MEMORY_MARKERS)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "(no message)"
