"""How the weight-free baseline uses lesion clicks (2025 interactive track).

A background click removes the predicted component under it. A tumour click keeps the predicted
component under it (it wins over a background click in the same component); where nothing was
predicted it grows a lesion: the voxels connected to the click whose SUV is at least half of the
peak SUV within `peak_radius_mm` of it, both measured above the box's median SUV (a 50 %-of-peak
contour corrected for background), inside a box of
`max_radius_mm` around the click. A contour that reaches the box's edge has leaked into hot
surroundings (a lesion in the liver, say): the fraction is raised step by step until it closes.
"""
from __future__ import annotations

from dataclasses import dataclass

import cc3d
import numpy as np

from petct.clicks import Clicks
from petct.lesions import LESION_CONNECTIVITY


@dataclass(frozen=True)
class ClickSettings:
    peak_fraction: float = 0.5
    fraction_steps: tuple[float, ...] = (0.6, 0.7, 0.8, 0.9)  # tried in turn while the contour leaks
    peak_radius_mm: float = 4.0  # about the voxel next door: further out, a hot neighbour (heart) sets the peak
    max_radius_mm: float = 60.0
    hotter_neighbour: float = 1.2  # voxels above this times the clicked peak are left out of a grown lesion


def refine_with_clicks(mask: np.ndarray, *, pet: np.ndarray, clicks: Clicks, spacing_zyx: tuple[float, float, float],
                       settings: ClickSettings = ClickSettings()) -> tuple[np.ndarray, dict[str, int]]:
    """The mask after the clicks, and counts of what each kind of click did."""
    out = np.asarray(mask, dtype=np.uint8).copy()
    notes = {"grown": 0, "kept": 0, "removed": 0}
    for x, y, z in clicks.tumor:
        if out[z, y, x]:
            notes["kept"] += 1
            continue
        region = _grow(pet, (z, y, x), spacing_zyx, settings)
        out[region] = 1
        notes["grown"] += 1
    labels = cc3d.connected_components(out, connectivity=LESION_CONNECTIVITY)
    protected = {int(labels[z, y, x]) for x, y, z in clicks.tumor if labels[z, y, x]}
    drop = {int(labels[z, y, x]) for x, y, z in clicks.background if labels[z, y, x]} - protected
    if drop:
        out[np.isin(labels, sorted(drop))] = 0
        notes["removed"] = len(drop)
    return out, notes


def _grow(pet: np.ndarray, seed: tuple[int, int, int], spacing: tuple[float, float, float],
          settings: ClickSettings) -> np.ndarray:
    """A boolean mask of the lesion grown from `seed` (full volume)."""
    box = _box(pet.shape, seed, spacing, settings.max_radius_mm)
    local = pet[box]
    centre = tuple(c - s.start for c, s in zip(seed, box))
    near = _box(local.shape, centre, spacing, settings.peak_radius_mm)
    peak = float(local[near].max())
    background = float(np.median(local))
    for fraction in (settings.peak_fraction, *settings.fraction_steps):
        # Voxels much hotter than the clicked lesion belong to a hotter neighbour (heart, bladder), not to it.
        above = ((local >= background + fraction * (peak - background))
                 & (local <= settings.hotter_neighbour * peak)).astype(np.uint8)
        above[centre] = 1  # the clicked voxel always belongs to its lesion
        labels = cc3d.connected_components(above, connectivity=LESION_CONNECTIVITY)
        region = labels == labels[centre]
        if not _touches_edge(region, box, pet.shape):
            break
    grown = np.zeros(pet.shape, dtype=bool)
    grown[box] = region
    return grown


def _touches_edge(region: np.ndarray, box: tuple[slice, ...], shape: tuple[int, ...]) -> bool:
    """Whether `region` reaches a face of its box that lies inside the image (where it was cut off)."""
    for axis, (s, n) in enumerate(zip(box, shape)):
        first = np.take(region, 0, axis=axis)
        last = np.take(region, region.shape[axis] - 1, axis=axis)
        if (s.start > 0 and first.any()) or (s.stop < n and last.any()):
            return True
    return False


def _box(shape: tuple[int, ...], centre: tuple[int, ...], spacing: tuple[float, ...], radius_mm: float) -> tuple[slice, ...]:
    half = [max(1, int(round(radius_mm / s))) for s in spacing]
    return tuple(slice(max(0, c - h), min(n, c + h + 1)) for c, h, n in zip(centre, half, shape))
