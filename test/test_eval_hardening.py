"""Attacks on the scoring container: hostile job names, nested JSON, symlinks, bad metrics.json."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from eval_helpers import Submission, geometry_of, write_mask
from evaluation.__main__ import main

GRID = geometry_of((6, 8, 10))


def small_mask(seed: int) -> np.ndarray:
    mask = np.zeros((6, 8, 10), np.uint8)
    mask[2:4, 2 + seed % 3:5, 3:7] = 1
    return mask


def _two_studies(tmp_path) -> Submission:
    sub = Submission(tmp_path)
    for name in ("PETCT_a", "PETCT_b"):
        write_mask(sub.ground_truth / f"{name}.mha", small_mask(0), GRID)
    sub.add_job(pk="good", pet_name="PETCT_a_SUV.mha", mask=small_mask(0), geometry=GRID)
    return sub


@pytest.mark.parametrize("where", ["pk", "relative_path"])
def test_over_long_names_fail_that_job_only(tmp_path, capsys, where):
    sub = _two_studies(tmp_path)
    if where == "pk":
        sub.add_job(pk="p" * 300, pet_name="PETCT_b_SUV.mha")
    else:
        sub.add_job(pk="long", pet_name="PETCT_b_SUV.mha")
        sub.items[-1]["outputs"][0]["interface"]["relative_path"] = "images/" + "r" * 5000
    sub.write_predictions_json()
    assert main(sub.argv()) == 1
    report = sub.metrics()
    assert report["case"]["PETCT_a"]["dice"] == 1.0
    [error] = [e for e in report["errors"] if e["study"] == "PETCT_b"]
    assert "cannot read the prediction" in error["reason"] and "too long" in error["reason"]
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert max(map(len, err.splitlines())) < 1000


def test_deeply_nested_predictions_json_is_one_clear_line(tmp_path, capsys):
    sub = _two_studies(tmp_path)
    (sub.input / "predictions.json").write_text("[" * 100_000)
    assert main(sub.argv()) == 1
    err = capsys.readouterr().err
    assert "predictions.json is not readable JSON: nested too deeply" in err
    assert "Traceback" not in err
    assert "metrics.json" in [p.name for p in sub.output.iterdir()]


def test_prediction_symlinked_out_of_the_input_folder_is_refused(tmp_path):
    sub = _two_studies(tmp_path)
    path = sub.add_job(pk="thief", pet_name="PETCT_b_SUV.mha")
    path.parent.mkdir(parents=True)
    os.symlink(sub.ground_truth / "PETCT_b.mha", path)
    sub.write_predictions_json()
    assert main(sub.argv()) == 1
    report = sub.metrics()
    assert "PETCT_b" not in report["case"]
    [error] = [e for e in report["errors"] if e["study"] == "PETCT_b"]
    assert "resolves outside the input folder" in error["reason"]
    assert report["case"]["PETCT_a"]["dice"] == 1.0


def test_prediction_folder_symlinked_out_of_the_input_folder_is_refused(tmp_path):
    sub = _two_studies(tmp_path)
    path = sub.add_job(pk="thief", pet_name="PETCT_b_SUV.mha")
    outside = tmp_path / "elsewhere"
    write_mask(outside / "out.mha", small_mask(0), GRID)
    path.parent.parent.mkdir(parents=True)
    os.symlink(outside, path.parent)
    sub.write_predictions_json()
    assert main(sub.argv()) == 1
    [error] = [e for e in sub.metrics()["errors"] if e["study"] == "PETCT_b"]
    assert "resolves outside the input folder" in error["reason"]


def test_symlink_inside_the_input_folder_is_still_scored(tmp_path):
    sub = _two_studies(tmp_path)
    path = sub.add_job(pk="linked", pet_name="PETCT_b_SUV.mha")
    write_mask(sub.input / "shared" / "b.mha", small_mask(0), GRID)
    path.parent.mkdir(parents=True)
    os.symlink(sub.input / "shared" / "b.mha", path)
    sub.write_predictions_json()
    assert main(sub.argv()) == 0
    assert sub.metrics()["case"]["PETCT_b"]["dice"] == 1.0


def _metrics(tmp_path, name: str, content) -> str:
    path = tmp_path / name / "metrics.json"
    path.parent.mkdir()
    path.write_text(json.dumps(content))
    return str(path)


GOOD = {"aggregates": {"dice": {"mean": 0.5}, "false_positive_volume": {"mean": 1.0},
                       "false_negative_volume": {"mean": None}}}


@pytest.mark.parametrize("content, reason", [
    ({"aggregates": {}}, "'aggregates' has no 'dice'"),
    ({"aggregates": {**GOOD["aggregates"], "dice": {"mean": "x"}}}, "aggregates 'dice' mean must be a number"),
    ({"aggregates": {**GOOD["aggregates"], "dice": "x"}}, "'aggregates' has no 'dice'"),
    ({"aggregates": {**GOOD["aggregates"], "dice": {"mean": True}}}, "must be a number or null"),
    ([1, 2], "must hold a JSON object"),
])
def test_rank_refuses_a_metrics_json_of_the_wrong_shape(tmp_path, capsys, content, reason):
    good = _metrics(tmp_path, "good", GOOD)
    bad = _metrics(tmp_path, "bad", content)
    assert main(["rank", good, bad]) != 0
    err = capsys.readouterr().err
    assert reason in err and bad in err
    assert "Traceback" not in err


def test_rank_refuses_bad_case_values_with_subsets(tmp_path, capsys):
    subsets = tmp_path / "subsets.json"
    subsets.write_text(json.dumps({"s1": "A"}))
    good = _metrics(tmp_path, "good", {"case": {"s1": {"dice": 1.0, "false_positive_volume": 0,
                                                        "false_negative_volume": 0}}})
    bad = _metrics(tmp_path, "bad", {"case": {"s1": {"dice": "x"}}})
    assert main(["rank", "--subsets", str(subsets), good, bad]) != 0
    err = capsys.readouterr().err
    assert "case 's1' 'dice' must be a number or null" in err and bad in err


def test_rank_accepts_good_files(tmp_path, capsys):
    assert main(["rank", _metrics(tmp_path, "a", GOOD), _metrics(tmp_path, "b", GOOD)]) == 0


def test_score_pair_refuses_absurd_spacing_naming_the_file(tmp_path, capsys):
    import SimpleITK as sitk
    gt = write_mask(tmp_path / "gt.mha", small_mask(0), GRID)
    image = sitk.ReadImage(str(gt))
    image.SetSpacing((1e308, 1.0, 1.0))
    far = tmp_path / "far.mha"
    sitk.WriteImage(image, str(far))
    assert main(["score-pair", str(gt), str(far)]) != 0
    err = capsys.readouterr().err
    assert f"file {far}: prediction: voxel spacing [1e+308, 1, 1] is not finite or outside" in err
