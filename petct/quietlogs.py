"""Silencing a library's own log lines while the kit reports what happened in its own one-line messages."""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_loggers(package: str) -> Iterator[None]:
    """Every logger of `package` (its own configuration sets the children's levels) at CRITICAL, then back."""
    loggers = {name: logging.getLogger(name) for name in list(logging.root.manager.loggerDict)
               if name.split(".")[0] == package}
    loggers.setdefault(package, logging.getLogger(package))
    levels = {name: logger.level for name, logger in loggers.items()}
    for logger in loggers.values():
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for name, logger in loggers.items():
            logger.setLevel(levels[name])
