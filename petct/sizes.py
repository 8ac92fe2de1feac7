"""Byte sizes written the way people and Docker write them: 2GiB, 1MB, 16g, 512m, 1048576 (limits, images)."""
from __future__ import annotations

import re

_UNITS = {
    "": 1, "b": 1,
    "k": 1024, "kb": 1000, "kib": 1024,
    "m": 1024**2, "mb": 1000**2, "mib": 1024**2,
    "g": 1024**3, "gb": 1000**3, "gib": 1024**3,
    "t": 1024**4, "tb": 1000**4, "tib": 1024**4,
}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str) -> int:
    """Bytes in `text`; Docker's bare letters (k, m, g) are binary, SI names (MB) decimal, KiB/MiB/GiB binary."""
    match = _PATTERN.match(str(text))
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(f"not a size: {text!r} (examples: 2GiB, 500MB, 16g, 1048576)")
    value = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if value < 1:
        raise ValueError(f"size must be at least one byte: {text!r}")
    return int(value)


def format_size(n_bytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n_bytes) < 1024 or unit == "GiB":
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1024
    return f"{n_bytes:.1f} GiB"


def docker_size(n_bytes: int) -> str:
    """The size as Docker's --memory flag takes it (whole mebibytes, or bytes when smaller)."""
    if n_bytes % (1024**3) == 0:
        return f"{n_bytes // 1024**3}g"
    if n_bytes % (1024**2) == 0:
        return f"{n_bytes // 1024**2}m"
    return str(n_bytes)
