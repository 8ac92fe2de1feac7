"""Argument types for the kit's command lines: argparse reports a bad value in one line, never a traceback."""
from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def whole_number(minimum: int, *, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number no smaller than `minimum` (and, if given, no larger than `maximum`)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum}, got {value}")
        return value
    return parse


def positive_number(text: str) -> float:
    """An argparse type: a finite number above zero (seconds, sizes)."""
    value = _finite(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def non_negative_number(text: str) -> float:
    """An argparse type: a finite number, zero or more (seconds that may be none)."""
    value = _finite(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be zero or more, got {text}")
    return value


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def byte_size(text: str) -> int:
    """An argparse type: a byte size as people and Docker write it (2GiB, 500MB, 16g; petct.sizes)."""
    from petct.sizes import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
