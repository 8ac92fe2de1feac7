"""Simulated lesion clicks from a ground-truth mask and its PET, following the 2025 organisers' simulation.

The rules (autoPETCTIV's clicks/simulate_clicks.py, read and re-written here; docs/editions.md):
- tumour clicks: the mask's 26-connected lesions; up to 10 are drawn at random (seeded, without
  replacement) and each gets a click at its centre, the voxel farthest from its border (the first
  maximum of the Euclidean distance transform); while fewer than 10, the drawn lesions in turn each
  give one more click on their border (a random voxel among those nearest the border);
- background clicks: voxels outside the lesions with SUV above the 99.75th percentile of the
  non-lesion SUV, in 26-connected regions; up to 10 regions drawn and clicked at their centres as
  above, then random voxels of the drawn regions until there are 10;
- a study without lesions gets background clicks only;
- one seed (42) per study, drawn in the order above, with numpy's legacy generator as the original.
Arrays are handled in (x, y, z) order, as the original indexes its NIfTI arrays, so clicks are ITK indices.
Where it differs: the distance transform runs on each region's bounding box (plus a one-voxel margin
inside the image), which gives the same distances; a hot region one voxel thick, where the original's
rule draws the extra background clicks from the whole image outside that region (lesions included),
gives them from the region itself; and a PET without any hot region outside the lesions gives fewer
than 10 background clicks instead of looping for ever.
"""
from __future__ import annotations

import cc3d
import numpy as np
from scipy import ndimage

from petct.clicks import Clicks
from petct.editions import MAX_CLICKS

SEED = 42
BACKGROUND_PERCENTILE = 99.75
# The organisers' simulation labels the regions it draws clicks from 26-connected (corners too), unlike the
# metrics' lesions (petct.lesions.LESION_CONNECTIVITY): kept as theirs.
ORGANISERS_CLICK_CONNECTIVITY = 26


def simulate_clicks(*, mask_zyx: np.ndarray, pet_zyx: np.ndarray, seed: int = SEED,
                    budget: int = MAX_CLICKS) -> Clicks:
    """Up to `budget` tumour and background clicks, (x, y, z) each, the same for the same inputs."""
    if mask_zyx.shape != pet_zyx.shape:
        raise ValueError(f"mask {mask_zyx.shape} and PET {pet_zyx.shape} differ in shape")
    # (x, y, z) views in Fortran order, as nibabel hands the original its arrays: cc3d numbers regions in
    # memory order, and that numbering decides which regions the seeded draw picks.
    label = np.asarray(mask_zyx != 0).transpose(2, 1, 0)
    pet = np.asarray(pet_zyx, dtype=np.float64).transpose(2, 1, 0)
    rng = np.random.RandomState(seed)
    tumor = _clicks_in(label, rng, budget=budget, fill="border") if label.any() else []
    outside = ~label
    background: list[tuple[int, int, int]] = []
    if outside.any():
        threshold = np.percentile(pet[outside], BACKGROUND_PERCENTILE)
        hot = (pet > threshold) & outside
        background = _clicks_in(hot, rng, budget=budget, fill="anywhere")
    return Clicks(tumor=tuple(tumor), background=tuple(background))


def _clicks_in(mask: np.ndarray, rng: np.random.RandomState, *, budget: int, fill: str) -> list[tuple[int, int, int]]:
    labels = cc3d.connected_components(mask.astype(np.uint8), connectivity=ORGANISERS_CLICK_CONNECTIVITY)
    present = np.unique(labels)[1:]
    if present.size == 0:
        return []
    drawn = rng.choice(present, size=min(budget, present.size), replace=False)
    boxes = ndimage.find_objects(labels)
    clicks = []
    for value in drawn:
        distance, offset = _distance(labels, boxes[value - 1], value)
        centre = np.unravel_index(int(np.argmax(distance)), distance.shape)
        clicks.append(tuple(int(c + o) for c, o in zip(centre, offset)))
    while len(clicks) < budget:
        for value in drawn:
            distance, offset = _distance(labels, boxes[value - 1], value)
            if fill == "border":
                inside = distance > 0
                candidates = np.argwhere(inside & (distance == distance[inside].min()))
            else:  # the original's border rule finds nothing outside a region and falls back to any of its voxels
                candidates = np.argwhere(distance > 0)
            pick = candidates[rng.choice(candidates.shape[0])]
            clicks.append(tuple(int(c + o) for c, o in zip(pick, offset)))
            if len(clicks) == budget:
                break
    return clicks


def _distance(labels: np.ndarray, box: tuple[slice, ...], value: int) -> tuple[np.ndarray, tuple[int, ...]]:
    """The distance transform of one region on its box plus a margin (clipped to the image), and the box's offset."""
    grown = tuple(slice(max(0, s.start - 1), min(n, s.stop + 1)) for s, n in zip(box, labels.shape))
    region = labels[grown] == value
    return ndimage.distance_transform_edt(region), tuple(s.start for s in grown)
