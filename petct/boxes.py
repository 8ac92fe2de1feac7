"""The bounding box of a mask: where the kit crops before labelling components or simulating clicks."""
from __future__ import annotations

import numpy as np


def bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """The smallest box (one slice per axis) holding every nonzero voxel of a boolean or unsigned mask; None
    when it has none."""
    if mask.size == 0:
        return None
    # Projections by max are single cheap passes: the first axis's profile over the whole mask, the other
    # axes' on the mask projected along the first (one full pass each, whatever the number of axes).
    profile = mask.max(axis=tuple(range(1, mask.ndim))) if mask.ndim > 1 else mask
    hits = np.flatnonzero(profile)
    if hits.size == 0:
        return None
    first = slice(int(hits[0]), int(hits[-1]) + 1)
    return (first,) if mask.ndim == 1 else (first, *bounding_box(mask.max(axis=0)))
