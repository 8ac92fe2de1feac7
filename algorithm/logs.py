"""Logging to stderr for the container, and timing of its stages."""
from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(*, verbose: bool = False) -> None:
    """Everything at INFO (DEBUG when verbose) to stderr: the platform keeps stderr as the job's log."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=FORMAT, stream=sys.stderr,
                        force=True)


@contextlib.contextmanager
def timed(timings: dict[str, float], stage: str, log: logging.Logger) -> Iterator[None]:
    """Record how long the block took under `stage` and log it."""
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = time.perf_counter() - start
    log.info("%s: %.2f s", stage, timings[stage])


def log_engine(description: dict, log: logging.Logger) -> None:
    """The engine in one short INFO line; its settings (a kilobyte for the baseline) at DEBUG (--debug)."""
    from petct.jsonio import dumps

    log.info("engine: %s", dumps({k: v for k, v in description.items() if k != "settings"}, indent=None))
    if "settings" in description:
        log.debug("engine settings: %s", dumps(description["settings"], indent=None))
