"""The weight-free baseline on phantom studies: beats a plain SUV >= 4 threshold, deterministic, orientation-free."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from algorithm.baseline import BaselineEngine, fill_holes_2d
from evaluation.metrics import score_arrays
from petct.phantom import make_study

SEEDS = range(12)  # 10 positive and 2 negative studies at size "small"
PLAIN_THRESHOLD_SUV = 4.0


def _arrays(study):
    return (sitk.GetArrayFromImage(study.suv), sitk.GetArrayFromImage(study.ctres),
            sitk.GetArrayFromImage(study.seg), study.suv.GetSpacing()[::-1])


@pytest.fixture(scope="module")
def scores():
    engine = BaselineEngine()
    rows = {"baseline": [], "threshold": []}
    for seed in SEEDS:
        study = make_study(seed, size="small")
        pet, ct, seg, spacing = _arrays(study)
        voxel_ml = float(np.prod(spacing)) / 1000
        mask = engine.predict(pet=pet, ct=ct, spacing_zyx=spacing).mask
        rows["baseline"].append(score_arrays(ground_truth=seg, prediction=mask, voxel_volume_ml=voxel_ml))
        rows["threshold"].append(score_arrays(ground_truth=seg, prediction=pet >= PLAIN_THRESHOLD_SUV,
                                              voxel_volume_ml=voxel_ml))
    return rows


def _mean(rows, metric):
    return float(np.nanmean([getattr(r, metric) for r in rows]))


def test_set_has_positive_and_negative_studies(scores):
    positives = sum(r.positive for r in scores["threshold"])
    assert 0 < positives < len(SEEDS)


def test_false_positive_volume_at_least_five_times_lower(scores):
    plain = _mean(scores["threshold"], "false_positive_volume")
    assert plain > 100  # the plain threshold takes brain, heart, kidneys and bladder
    assert 5 * _mean(scores["baseline"], "false_positive_volume") <= plain


def test_dice_at_least_as_high(scores):
    assert _mean(scores["baseline"], "dice") >= _mean(scores["threshold"], "dice")
    assert _mean(scores["baseline"], "dice") > 0.5


def test_finds_most_lesions(scores):
    found = sum(r.detected_lesions for r in scores["baseline"])
    total = sum(r.gt_lesions for r in scores["baseline"])
    assert found >= 0.7 * total


def test_negative_studies_stay_empty(scores):
    for row in scores["baseline"]:
        if not row.positive:
            assert row.pred_volume == 0


@pytest.mark.parametrize("axes", [(0,), (1,), (2,), (0, 1, 2)])
def test_flipped_study_gives_the_flipped_mask(axes):
    """Landmarks come from the images, not from an assumed orientation."""
    engine = BaselineEngine()
    for seed in (1, 3):
        pet, ct, _, spacing = _arrays(make_study(seed, size="tiny"))
        mask = engine.predict(pet=pet, ct=ct, spacing_zyx=spacing).mask
        flipped = engine.predict(pet=np.flip(pet, axes), ct=np.flip(ct, axes), spacing_zyx=spacing)
        assert mask.any()
        np.testing.assert_array_equal(np.flip(flipped.mask, axes), mask)
        assert flipped.notes["head_towards"] == ("-z" if 0 in axes else "+z")


def test_deterministic_and_contract():
    pet, ct, _, spacing = _arrays(make_study(2, size="tiny"))
    engine = BaselineEngine()
    first, second = (engine.predict(pet=pet, ct=ct, spacing_zyx=spacing) for _ in range(2))
    np.testing.assert_array_equal(first.mask, second.mask)
    assert first.mask.dtype == np.uint8 and first.mask.shape == pet.shape
    assert set(np.unique(first.mask).tolist()) <= {0, 1}
    assert first.notes == second.notes and first.notes["lungs_found"]
    assert engine.describe()["engine"] == "baseline" and engine.describe()["device"] == "cpu"


def test_no_body_and_no_lungs_do_not_crash():
    shape, spacing = (20, 16, 16), (3.0, 4.0, 4.0)
    air = np.full(shape, -1000.0, np.float32)
    result = BaselineEngine().predict(pet=np.zeros(shape, np.float32), ct=air, spacing_zyx=spacing)
    assert not result.mask.any() and not result.notes["lungs_found"]
    # Pelvis only: soft tissue with a hot lesion, no lungs to orient by.
    ct = air.copy()
    ct[:, 3:13, 3:13] = 40.0
    pet = np.where(ct > -500, 1.0, 0.0).astype(np.float32)
    pet[8:11, 6:9, 6:9] = 10.0
    result = BaselineEngine().predict(pet=pet, ct=ct, spacing_zyx=spacing)
    assert result.mask[8:11, 6:9, 6:9].all() and result.mask.sum() == 27


def test_fill_holes_matches_scipy():
    rng = np.random.default_rng(7)
    for _ in range(300):
        mask = rng.random((rng.integers(1, 25), rng.integers(1, 25))) < rng.uniform(0.2, 0.8)
        np.testing.assert_array_equal(fill_holes_2d(mask), ndimage.binary_fill_holes(mask))
