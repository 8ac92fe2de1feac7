"""The baseline's component steps (largest component, lungs, hysteresis) against straightforward scipy versions.

The kit labels within bounding boxes and counts with cc3d to keep a full-size study's working memory small;
these references label the whole volume with scipy.ndimage, so any difference in which voxels are kept, or in
which component wins a tie, shows here.
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from algorithm.baseline import (
    BaselineEngine,
    BaselineSettings,
    body_mask,
    find_landmarks,
    hysteresis,
    largest_component,
)
from petct.lesions import LESION_CONNECTIVITY

FACES = ndimage.generate_binary_structure(3, 1)  # 6-connectivity
CONNECTIVITY = {6: FACES, 18: ndimage.generate_binary_structure(3, 2), 26: ndimage.generate_binary_structure(3, 3)}


def reference_largest(mask: np.ndarray) -> np.ndarray:
    """Label the whole volume, count every label, keep the largest (the lowest label, first in scan order, on a tie)."""
    labels, _ = ndimage.label(mask, structure=FACES)
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    return labels == int(np.argmax(counts))


def reference_hysteresis(pet: np.ndarray, *, high: float, low: float, within: np.ndarray) -> np.ndarray:
    weak = (pet >= low) & within
    labels, _ = ndimage.label(weak, structure=CONNECTIVITY[LESION_CONNECTIVITY])
    seeds = np.unique(labels[(pet >= high) & weak])
    return np.isin(labels, seeds[seeds != 0])


def reference_lungs(*, ct: np.ndarray, body: np.ndarray, filled: np.ndarray, voxel_ml: float,
                    settings: BaselineSettings) -> tuple[int, int, float] | None:
    """First and last lung slice and the lungs' mean z index (two largest air components), or None."""
    air = filled & ~body & (ct < settings.lung_hu)
    labels, _ = ndimage.label(air, structure=FACES)
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    order = [int(i) for i in np.argsort(counts)[::-1][:2] if counts[i] * voxel_ml >= settings.min_lung_ml]
    if not order:
        return None
    lung_z = np.flatnonzero(np.isin(labels, order).any(axis=(1, 2)))
    z = np.nonzero(np.isin(labels, order))[0]
    return int(lung_z[0]), int(lung_z[-1]), float(z.mean())


def random_volume(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(n) for n in rng.integers(1, 16, size=3))


@pytest.mark.parametrize("seed", range(4))
def test_largest_component_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    for _ in range(150):
        mask = rng.random(random_volume(rng)) < rng.uniform(0.05, 0.7)
        if not mask.any():
            continue
        kept = largest_component(mask)
        assert kept.dtype == bool and kept.shape == mask.shape
        np.testing.assert_array_equal(kept, reference_largest(mask))


def test_largest_component_tie_keeps_the_first_in_scan_order():
    mask = np.zeros((3, 5, 5), dtype=bool)
    mask[2, 0, 0:2] = True  # later in scan order
    mask[0, 4, 3:5] = True  # earlier, same size
    np.testing.assert_array_equal(largest_component(mask), mask & (np.arange(3) == 0)[:, None, None])


@pytest.mark.parametrize("seed", range(4))
def test_hysteresis_matches_scipy(seed):
    rng = np.random.default_rng(100 + seed)
    for _ in range(150):
        shape = random_volume(rng)
        pet = rng.uniform(0.0, 6.0, size=shape).astype(np.float32)
        within = rng.random(shape) < rng.uniform(0.3, 1.0)
        high, low = float(rng.uniform(3.0, 6.0)), float(rng.uniform(0.5, 3.0))
        grown = hysteresis(pet, high=high, low=low, within=within)
        assert grown.dtype == bool and grown.shape == shape
        np.testing.assert_array_equal(grown, reference_hysteresis(pet, high=high, low=low, within=within))


@pytest.mark.parametrize("seed", range(4))
def test_body_and_lungs_match_scipy(seed):
    rng = np.random.default_rng(200 + seed)
    spacing = (3.0, 2.0, 2.0)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    for _ in range(150):
        shape = random_volume(rng)
        ct = rng.choice([-1000.0, -450.0, 40.0], size=shape, p=rng.dirichlet([1.0, 1.0, 1.0]))
        settings = BaselineSettings(min_lung_ml=float(rng.choice([0.005, 0.03, 0.1])))
        body, filled = body_mask(ct, settings.body_hu)
        tissue = ct > settings.body_hu
        np.testing.assert_array_equal(body, reference_largest(tissue) if tissue.any() else tissue)
        landmarks = find_landmarks(ct=ct, body=body, filled=filled, spacing=spacing, settings=settings)
        lungs = reference_lungs(ct=ct, body=body, filled=filled, voxel_ml=voxel_ml, settings=settings)
        assert landmarks.lungs_found == (lungs is not None)
        if lungs is None:
            continue
        first, last, mean_z = lungs
        lo, hi = first * spacing[0], (last + 1) * spacing[0]
        assert (landmarks.lung_base_z_mm, landmarks.lung_apex_z_mm) == ((lo, hi) if landmarks.up > 0 else (hi, lo))
        body_z = np.flatnonzero(filled.any(axis=(1, 2)))
        centre = (mean_z + 0.5) * spacing[0]
        towards_high_z = (body_z[-1] + 1) * spacing[0] - centre <= centre - body_z[0] * spacing[0]
        if not np.isclose(centre, 0.5 * (body_z[0] + body_z[-1] + 1) * spacing[0]):  # not a tie
            assert landmarks.up == (1 if towards_high_z else -1)


def test_engine_mask_is_the_kept_candidates():
    """On random small studies, the engine's mask is uint8 and lies within the hysteresis candidates."""
    rng = np.random.default_rng(7)
    for _ in range(40):
        shape = random_volume(rng)
        ct = rng.choice([-1000.0, -450.0, 40.0], size=shape)
        pet = rng.uniform(0.0, 8.0, size=shape).astype(np.float32)
        prediction = BaselineEngine().predict(pet=pet, ct=ct, spacing_zyx=(30.0, 20.0, 20.0))
        assert prediction.mask.dtype == np.uint8 and prediction.mask.shape == shape
        assert set(np.unique(prediction.mask)) <= {0, 1}
        _, filled = body_mask(ct, -500.0)
        assert not (prediction.mask.astype(bool) & ~filled).any()
