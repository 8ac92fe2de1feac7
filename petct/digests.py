"""File digests, as the model and image tarballs are reported (and as grand-challenge shows an upload's)."""
from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK = 1 << 20  # read in 1 MiB blocks: tarballs are gigabytes


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()
