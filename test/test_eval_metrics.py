"""score_arrays against the reference's check vectors and against a slow, independent implementation."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage

from evaluation.metrics import StudyMetrics, score_arrays

# 18-connectivity written out independently of cc3d: faces and edges of the 3x3x3 cube, no corners.
STRUCTURE_18 = ndimage.generate_binary_structure(3, 2)
assert STRUCTURE_18.sum() == 19


def slow_reference(gt: np.ndarray, pred: np.ndarray, voxel_ml: float) -> dict:
    """The metrics the way the published scripts compute them: one full-volume pass per component."""
    gt, pred = gt != 0, pred != 0
    gt_labels, n_gt = ndimage.label(gt, STRUCTURE_18)
    pred_labels, n_pred = ndimage.label(pred, STRUCTURE_18)
    fp_voxels = fp_components = 0
    for label in range(1, n_pred + 1):
        component = pred_labels == label
        if not (component & gt).any():
            fp_voxels += int(component.sum())
            fp_components += 1
    fn_voxels = detected = 0
    for label in range(1, n_gt + 1):
        component = gt_labels == label
        if (component & pred).any():
            detected += 1
        else:
            fn_voxels += int(component.sum())
    positive = bool(gt.any())
    return {
        "dice": 2 * int((gt & pred).sum()) / (int(gt.sum()) + int(pred.sum())) if positive else math.nan,
        "false_positive_volume": fp_voxels * voxel_ml,
        "false_negative_volume": fn_voxels * voxel_ml if positive else math.nan,
        "gt_volume": int(gt.sum()) * voxel_ml,
        "pred_volume": int(pred.sum()) * voxel_ml,
        "gt_lesions": n_gt,
        "detected_lesions": detected,
        "fp_components": fp_components,
    }


def assert_matches(metrics: StudyMetrics, expected: dict) -> None:
    for name, value in expected.items():
        got = getattr(metrics, name)
        if isinstance(value, float) and math.isnan(value):
            assert math.isnan(got), name
        else:
            assert got == pytest.approx(value, rel=1e-12, abs=1e-12), name


def cubes(*slices_per_cube, shape=(10, 10, 10)) -> np.ndarray:
    array = np.zeros(shape, dtype=np.uint8)
    for lo, hi in slices_per_cube:
        array[lo:hi, lo:hi, lo:hi] = 1
    return array


def test_check_vectors_of_the_reference():
    gt = cubes((1, 5), (6, 10))
    pred = cubes((0, 4))
    m = score_arrays(ground_truth=gt, prediction=pred, voxel_volume_ml=0.001)
    assert m.dice == pytest.approx(54 / 192) == pytest.approx(0.28125)
    assert m.false_positive_volume == 0.0  # the predicted cube touches a lesion
    assert m.false_negative_volume == pytest.approx(0.064)  # the second cube, 64 voxels of 1 mm^3
    assert (m.gt_lesions, m.detected_lesions, m.fp_components) == (2, 1, 0)
    assert m.gt_volume == pytest.approx(0.128) and m.pred_volume == pytest.approx(0.064)


@pytest.mark.parametrize("offset, components", [
    ((1, 1, 1), 2),  # corner only: two components
    ((1, 1, 0), 1),  # shared edge: one
    ((0, 1, 1), 1),
    ((1, 0, 0), 1),  # shared face: one
    ((2, 0, 0), 2),  # a gap
])
def test_corner_is_not_connected_but_edge_is(offset, components):
    mask = np.zeros((4, 4, 4), dtype=np.uint8)
    mask[0, 0, 0] = 1
    mask[offset] = 1
    m = score_arrays(ground_truth=mask, prediction=np.zeros_like(mask), voxel_volume_ml=1.0)
    assert m.gt_lesions == components
    # The same rule on the prediction side.
    m = score_arrays(ground_truth=np.zeros_like(mask), prediction=mask, voxel_volume_ml=1.0)
    assert m.fp_components == components


def test_one_touching_voxel_saves_a_whole_component():
    gt = cubes((0, 4))
    pred = np.zeros_like(gt)
    pred[3:8, 3, 3] = 1  # a line of 5 voxels whose first voxel lies in the lesion
    m = score_arrays(ground_truth=gt, prediction=pred, voxel_volume_ml=1.0)
    assert m.false_positive_volume == 0.0 and m.false_negative_volume == 0.0
    assert m.detected_lesions == 1 and m.fp_components == 0
    assert m.dice == pytest.approx(2 * 1 / (64 + 5))


def test_empty_ground_truth_and_empty_prediction():
    empty = np.zeros((5, 6, 7), dtype=np.uint8)
    m = score_arrays(ground_truth=empty, prediction=empty, voxel_volume_ml=0.5)
    assert math.isnan(m.dice) and math.isnan(m.false_negative_volume)
    assert m.false_positive_volume == 0.0 and m.gt_volume == 0.0 and m.pred_volume == 0.0
    assert not m.positive
    assert m.to_json()["dice"] is None and m.to_json()["false_negative_volume"] is None


def test_empty_ground_truth_with_prediction_gives_undefined_dice_not_zero():
    gt = np.zeros((5, 6, 7), dtype=np.uint8)
    pred = gt.copy()
    pred[1:3, 1:3, 1:3] = 1
    pred[4, 5, 6] = 1
    m = score_arrays(ground_truth=gt, prediction=pred, voxel_volume_ml=0.5)
    assert math.isnan(m.dice) and math.isnan(m.false_negative_volume)
    assert m.false_positive_volume == pytest.approx(9 * 0.5)
    assert m.fp_components == 2 and m.gt_lesions == 0


def test_empty_prediction_on_positive_study():
    gt = cubes((1, 3), (5, 9))
    m = score_arrays(ground_truth=gt, prediction=np.zeros_like(gt), voxel_volume_ml=2.0)
    assert m.dice == 0.0
    assert m.false_positive_volume == 0.0
    assert m.false_negative_volume == pytest.approx((8 + 64) * 2.0)
    assert (m.gt_lesions, m.detected_lesions) == (2, 0)


def test_to_json_is_strict_json():
    m = score_arrays(ground_truth=np.zeros((3, 3, 3), bool), prediction=np.ones((3, 3, 3), bool),
                     voxel_volume_ml=1.0)
    text = json.dumps(m.to_json(), allow_nan=False)
    assert json.loads(text)["false_positive_volume"] == 27.0
    assert set(m.to_json()) == {"dice", "false_positive_volume", "false_negative_volume", "gt_volume",
                                "pred_volume", "gt_lesions", "detected_lesions", "fp_components"}


def test_dtypes_and_labels_above_one_count_as_lesion_without_touching_the_inputs():
    rng = np.random.default_rng(5)
    gt = (rng.random((12, 13, 14)) < 0.2).astype(np.uint8)
    pred = (rng.random((12, 13, 14)) < 0.2).astype(np.uint8)
    expected = slow_reference(gt, pred, 0.3)
    labelled = pred.astype(np.int16) * rng.integers(1, 5, size=pred.shape)  # labels 1-4
    before = labelled.copy()
    for g, p in [(gt.astype(bool), pred.astype(bool)), (gt, labelled), (gt.astype(np.int32) * 3, pred)]:
        assert_matches(score_arrays(ground_truth=g, prediction=p, voxel_volume_ml=0.3), expected)
    np.testing.assert_array_equal(labelled, before)


def test_mismatched_shapes_are_a_programming_error():
    with pytest.raises(ValueError, match="shapes differ"):
        score_arrays(ground_truth=np.zeros((2, 2, 2)), prediction=np.zeros((2, 2, 3)), voxel_volume_ml=1.0)


@pytest.mark.parametrize("seed", range(12))
def test_random_volumes_match_slow_reference(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in rng.integers(8, 40, size=3))
    gt = rng.random(shape) < rng.uniform(0.0, 0.25)
    pred = rng.random(shape) < rng.uniform(0.0, 0.25)
    if seed % 3 == 0:  # masks in a corner only, so the bounding-box crop matters
        gt[: shape[0] // 2] = False
        pred[:, : shape[1] // 2] = False
    voxel_ml = float(rng.uniform(0.001, 0.02))
    assert_matches(score_arrays(ground_truth=gt, prediction=pred, voxel_volume_ml=voxel_ml),
                   slow_reference(gt, pred, voxel_ml))


masks = st.tuples(st.integers(1, 7), st.integers(1, 7), st.integers(1, 7)).flatmap(
    lambda shape: st.tuples(arrays(np.bool_, shape), arrays(np.bool_, shape)))


@settings(max_examples=300, deadline=None)
@given(pair=masks, voxel_ml=st.floats(1e-4, 10.0))
def test_property_matches_slow_reference(pair, voxel_ml):
    gt, pred = pair
    assert_matches(score_arrays(ground_truth=gt, prediction=pred, voxel_volume_ml=voxel_ml),
                   slow_reference(gt, pred, voxel_ml))
