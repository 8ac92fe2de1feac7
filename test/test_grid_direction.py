"""The direction tolerance at its boundary: a rotation of ~0.06 degrees is another grid, writer noise is not."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from algorithm.pipeline import read_study
from evaluation.scoring import score_files
from petct.errors import InputError
from petct.imageio import DIRECTION_ATOL, Geometry, grid_mismatches, image_from_array, write_image_atomic
from petct.phantom import DIRECTION as PHANTOM_DIRECTION

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
SMALL = math.asin(1e-3)  # about 0.057 degrees: sin 1e-3, ten times the tolerance
REPO_ROOT = Path(__file__).resolve().parents[1]


def _rotated(direction: tuple[float, ...], angle: float, axis: int) -> tuple[float, ...]:
    """`direction` (row-major 3x3, columns the image axes) turned by `angle` about a world axis."""
    c, s = math.cos(angle), math.sin(angle)
    i, j = [k for k in range(3) if k != axis]
    rotation = np.eye(3)
    rotation[i, i], rotation[i, j], rotation[j, i], rotation[j, j] = c, -s, s, c
    return tuple(float(v) for v in (rotation @ np.array(direction).reshape(3, 3)).ravel())


def _geometry(direction=IDENTITY, size=(12, 10, 8)) -> Geometry:
    return Geometry(size=size, spacing=(2.0, 2.0, 3.0), origin=(-10.0, 5.0, 20.0), direction=direction)


@pytest.mark.parametrize("base", [IDENTITY, PHANTOM_DIRECTION], ids=["identity", "phantom"])
@pytest.mark.parametrize("axis", [0, 1, 2], ids=["x", "y", "z"])
def test_a_rotation_of_sine_1e_3_is_a_direction_mismatch(base, axis):
    assert 1e-3 > DIRECTION_ATOL  # the boundary this test guards
    turned = _geometry(_rotated(base, SMALL, axis))
    problems = grid_mismatches(_geometry(base), turned)
    assert len(problems) == 1 and problems[0].startswith("direction"), problems


@pytest.mark.parametrize("entry", range(9))
def test_a_5e_5_difference_in_one_entry_is_the_same_grid(entry):
    direction = list(PHANTOM_DIRECTION)
    direction[entry] += 5e-5
    assert grid_mismatches(_geometry(PHANTOM_DIRECTION), _geometry(tuple(direction))) == []


def _write(array: np.ndarray, geometry: Geometry, path) -> None:
    write_image_atomic(image_from_array(array, geometry), path)


def test_a_prediction_rotated_by_0_06_degrees_is_an_off_grid_case_end_to_end(tmp_path):
    mask = np.zeros((8, 10, 12), np.uint8)
    mask[2:6, 3:7, 4:9] = 1
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    _write(mask, _geometry(), tmp_path / "gt" / "CASE.mha")
    _write(mask, _geometry(_rotated(IDENTITY, SMALL, 2)), tmp_path / "pred" / "CASE.mha")
    with pytest.raises(InputError, match="direction"):
        score_files(ground_truth=tmp_path / "gt" / "CASE.mha", prediction=tmp_path / "pred" / "CASE.mha")
    run = subprocess.run([sys.executable, "-m", "evaluation", "score-folders", "--ground-truth", str(tmp_path / "gt"),
                          "--predictions", str(tmp_path / "pred"), "--output", str(tmp_path / "metrics.json")],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert report["case"] == {}  # not scored as if the masks were aligned
    (error,) = report["errors"]
    assert error["study"] == "CASE" and "prediction is not on the ground truth's grid: direction" in error["reason"]


def test_a_ct_rotated_by_0_06_degrees_is_resampled_onto_the_pet_grid(tmp_path):
    rng = np.random.default_rng(3)
    pet = rng.uniform(0, 5, (8, 10, 12)).astype(np.float32)
    ct = rng.uniform(-1000, 1000, (8, 10, 12)).astype(np.float32)
    _write(pet, _geometry(), tmp_path / "pet.mha")
    _write(ct, _geometry(_rotated(IDENTITY, SMALL, 2)), tmp_path / "ct.mha")
    study = read_study(pet_path=tmp_path / "pet.mha", ct_path=tmp_path / "ct.mha")
    resampled = study.notes["ct_resampled"]
    assert any(problem.startswith("direction") for problem in resampled["from"])
    straight = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "ct.mha")))
    assert not np.array_equal(study.ct, straight)  # the CT's voxels were moved, not taken as they are
