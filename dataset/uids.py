"""Deterministic DICOM UIDs under the kit's private root: the same inputs always get the same UIDs."""
from __future__ import annotations

import hashlib

UID_ROOT = "1.2.826.0.1.3680043.10.1512."  # the kit's private root (synthetic studies, exported SEGs)


def uid(*parts: object) -> str:
    """A deterministic UID from `parts`: the same study always gets the same UIDs."""
    digest = int(hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest(), 16)
    return (UID_ROOT + str(digest))[:64].rstrip(".")
