"""score_files and `python -m evaluation score-pair`: geometry from the ground truth, and bad files."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import SimpleITK as sitk

from eval_helpers import geometry_of, write_mask
from evaluation.__main__ import main
from evaluation.scoring import score_files
from petct.errors import InputError
from petct.imageio import Geometry, write_image_atomic

SPACING = (2.0, 1.5, 3.0)  # x, y, z in mm: 9 mm^3 = 0.009 ml per voxel
VOXEL_ML = 0.009


def cube_pair(shape=(8, 9, 10)):
    gt = np.zeros(shape, np.uint8)
    gt[1:4, 1:4, 1:4] = 1  # 27 voxels
    pred = np.zeros(shape, np.uint8)
    pred[2:4, 2:4, 2:4] = 1  # 8 voxels, inside
    pred[6, 7, 8] = 1  # a false positive voxel
    return gt, pred


@pytest.fixture
def files(tmp_path):
    gt, pred = cube_pair()
    geometry = geometry_of(gt.shape, spacing=SPACING, origin=(-10.0, 5.0, 2.5))
    return (write_mask(tmp_path / "PETCT_abc_SEG.mha", gt, geometry),
            write_mask(tmp_path / "pred.nii.gz", pred, geometry), geometry)


def test_scores_files_with_volumes_from_the_ground_truth_spacing(files):
    gt_path, pred_path, _ = files
    result = score_files(ground_truth=gt_path, prediction=pred_path)
    assert result.study == "PETCT_abc"  # the _SEG suffix is not part of the study name
    m = result.metrics
    assert m.dice == pytest.approx(2 * 8 / (27 + 9))
    assert m.gt_volume == pytest.approx(27 * VOXEL_ML)
    assert m.false_positive_volume == pytest.approx(VOXEL_ML)
    assert m.false_negative_volume == 0.0
    assert result.warnings == []
    record = result.to_json()
    assert record["ground_truth_file"] == str(gt_path) and record["prediction_file"] == str(pred_path)
    json.dumps(record, allow_nan=False)


def test_prediction_spacing_within_tolerance_uses_the_ground_truth_spacing(tmp_path, files):
    gt_path, _, geometry = files
    _, pred = cube_pair()
    nearly = Geometry(size=geometry.size, spacing=tuple(s * (1 + 1e-6) for s in geometry.spacing),
                      origin=geometry.origin, direction=geometry.direction)
    pred_path = write_mask(tmp_path / "p.mha", pred, nearly)
    m = score_files(ground_truth=gt_path, prediction=pred_path, study="s1").metrics
    assert m.pred_volume == pytest.approx(9 * VOXEL_ML, rel=1e-12)


@pytest.mark.parametrize("change, reason", [
    (dict(spacing=(2.0, 1.5, 2.0)), "spacing"),  # the published scripts' bug: volume from this header
    (dict(origin=(-10.0, 5.0, 4.0)), "origin"),
    (dict(direction=(0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)), "direction"),
])
def test_prediction_on_another_grid_is_refused(tmp_path, files, change, reason):
    gt_path, _, geometry = files
    _, pred = cube_pair()
    other = Geometry(**{**geometry.__dict__, **change})
    pred_path = write_mask(tmp_path / "p.mha", pred, other)
    with pytest.raises(InputError) as error:
        score_files(ground_truth=gt_path, prediction=pred_path, study="PETCT_abc")
    message = str(error.value)
    assert "PETCT_abc" in message and str(pred_path) in message
    assert "not on the ground truth's grid" in message and reason in message


def test_prediction_of_another_size_is_refused(tmp_path, files):
    gt_path, _, geometry = files
    pred_path = write_mask(tmp_path / "p.mha", np.zeros((8, 9, 11), np.uint8),
                           geometry_of((8, 9, 11), spacing=SPACING, origin=geometry.origin))
    with pytest.raises(InputError, match=r"size \[11, 9, 8\] != \[10, 9, 8\]"):
        score_files(ground_truth=gt_path, prediction=pred_path)


def write_raw(path, array, *, spacing=(1.0, 1.0, 1.0)):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing[: image.GetDimension()])
    write_image_atomic(image, path)
    return path


def bad_predictions(tmp_path):
    """(file, what the message must say) for every kind of bad prediction file."""
    good = write_mask(tmp_path / "good.mha", cube_pair()[1])
    data = good.read_bytes()
    cases = {
        "garbage.mha": (lambda p: p.write_bytes(b"this is not an image\n" * 10), "not a readable image"),
        "empty.mha": (lambda p: p.write_bytes(b""), "file is empty"),
        "truncated.mha": (lambda p: p.write_bytes(data[: len(data) // 2]), "truncated"),
        "missing.mha": (lambda p: None, "does not exist"),
        "flat.mha": (lambda p: write_raw(p, np.zeros((9, 10), np.uint8)), "3D"),
        "series.mha": (lambda p: write_image_atomic(sitk.JoinSeries([sitk.Image(10, 9, 8, sitk.sitkUInt8)] * 2), p),
                       "3D"),
        "vector.mha": (lambda p: write_image_atomic(sitk.Image([10, 9, 8], sitk.sitkVectorUInt8, 3), p), "channel"),
        "probabilities.mha": (lambda p: write_raw(p, cube_pair()[1].astype(np.float32) * 0.7), "floating-point"),
        "nan.mha": (lambda p: write_raw(p, np.full((8, 9, 10), np.nan, np.float32)), "NaN"),
    }
    for name, (make, reason) in cases.items():
        path = tmp_path / name
        make(path)
        yield path, reason


def test_every_bad_prediction_file_gets_a_clear_error(tmp_path, files):
    gt_path, _, _ = files
    seen = 0
    for pred_path, reason in bad_predictions(tmp_path):
        with pytest.raises(InputError) as error:
            score_files(ground_truth=gt_path, prediction=pred_path, study="PETCT_abc")
        message = str(error.value)
        assert "study PETCT_abc" in message and str(pred_path) in message and "prediction" in message, message
        assert reason in message, message
        seen += 1
    assert seen == 9


def test_truncated_nifti_is_refused_not_zero_filled(tmp_path, files):
    gt_path, _, geometry = files
    rng = np.random.default_rng(0)
    pred = (rng.random((8, 9, 10)) < 0.5).astype(np.uint8)
    for name in ("p.nii.gz", "p.nii"):
        path = write_mask(tmp_path / name, pred, geometry)
        path.write_bytes(path.read_bytes()[:-40])
        with pytest.raises(InputError, match="truncated"):
            score_files(ground_truth=gt_path, prediction=path)


def test_bad_ground_truth_names_the_ground_truth(tmp_path, files):
    _, pred_path, _ = files
    gt_path = tmp_path / "gt.mha"
    gt_path.write_bytes(b"")
    with pytest.raises(InputError, match=r"study s9, file .*gt.mha: ground truth: file is empty"):
        score_files(ground_truth=gt_path, prediction=pred_path, study="s9")


def test_labels_other_than_one_count_as_lesion_with_a_warning(tmp_path, files):
    gt_path, pred_path, geometry = files
    _, pred = cube_pair()
    labelled = write_mask(tmp_path / "labels.mha", pred.astype(np.int16) * 3, geometry)
    expected = score_files(ground_truth=gt_path, prediction=pred_path).metrics
    result = score_files(ground_truth=gt_path, prediction=labelled)
    assert result.metrics == expected
    assert any("labels other than 0 and 1 (values 3 in 9 voxel(s))" in w for w in result.warnings)
    assert any("pixel type int16" in w for w in result.warnings)


def test_empty_masks_on_disk(tmp_path):
    geometry = geometry_of((4, 5, 6))
    empty = write_mask(tmp_path / "e.mha", np.zeros((4, 5, 6), np.uint8), geometry)
    result = score_files(ground_truth=empty, prediction=empty)
    assert math.isnan(result.metrics.dice)
    assert result.to_json()["dice"] is None and result.to_json()["false_positive_volume"] == 0.0


def test_score_pair_prints_json(files, capsys):
    gt_path, pred_path, _ = files
    assert main(["score-pair", str(gt_path), str(pred_path), "--study", "x1"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["dice"] == pytest.approx(2 * 8 / 36) and record["fp_components"] == 1


def test_score_pair_bad_input_is_one_line_and_nonzero(tmp_path, files, capsys):
    gt_path, _, _ = files
    bad = tmp_path / "bad.mha"
    bad.write_bytes(b"nope")
    assert main(["score-pair", str(gt_path), str(bad)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "bad.mha" in lines[0] and "not a readable image" in lines[0]
    assert "Traceback" not in captured.err


def test_ground_truth_saved_as_float_is_read_as_labels_but_a_float_prediction_is_not(tmp_path, files):
    gt_path, pred_path, geometry = files
    gt, pred = cube_pair()
    float_gt = write_mask(tmp_path / "gt_float.nii.gz", gt.astype(np.float64), geometry)
    expected = score_files(ground_truth=gt_path, prediction=pred_path).metrics
    result = score_files(ground_truth=float_gt, prediction=pred_path)
    assert result.metrics == expected
    assert result.warnings == ["ground truth has pixel type float64; the platform expects uint8 or int8"]
    # Fractions or NaN in the ground truth are still refused.
    for name, bad in (("half.mha", gt * 0.5), ("nan.mha", np.where(gt == 1, np.nan, 0.0))):
        with pytest.raises(InputError, match=f"{name}: ground truth: holds floating-point values"):
            score_files(ground_truth=write_mask(tmp_path / name, bad.astype(np.float32), geometry),
                        prediction=pred_path)
    # The platform only accepts uint8/int8 segmentations: a float prediction means a broken pipeline.
    float_pred = write_mask(tmp_path / "pred_float.mha", pred.astype(np.float32), geometry)
    with pytest.raises(InputError, match="prediction: holds floating-point values"):
        score_files(ground_truth=gt_path, prediction=float_pred)
