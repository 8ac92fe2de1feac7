"""`python -m algorithm` with an nnU-Net results folder: the whole container path against nnU-Net's own answer."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from algorithm_helpers import output_files, run_algorithm, set_read_only, write_platform_input
from nnunet_helpers import dice, reference_prediction, require_nnunetv2
from petct.imageio import Geometry

require_nnunetv2()


@pytest.fixture(scope="module")
def case(tmp_path_factory, nnunet_case):
    root = tmp_path_factory.mktemp("nnunet-container")
    platform = write_platform_input(root / "input", nnunet_case.study)
    return {"root": root, "input": platform, "study": nnunet_case.study, "model": nnunet_case.model,
            "suv": nnunet_case.suv, "ct": nnunet_case.ct, "spacing": nnunet_case.spacing}


@pytest.mark.slow
def test_container_runs_a_results_folder_like_nnunet(case):
    root, study = case["root"], case["study"]
    set_read_only(case["input"].root, True)
    try:
        result = run_algorithm("--input", case["input"].root, "--output", root / "output", "--model", case["model"],
                               "--device", "cpu", "--no-tta", "--save-probabilities", root / "probs.mha")
    finally:
        set_read_only(case["input"].root, False)
    assert result.returncode == 0, result.stderr
    assert '"engine": "nnunet"' in result.stderr and "fold" in result.stderr

    [mask_path] = output_files(root / "output")
    assert mask_path.parent.name == "automated-petct-lesion-segmentation" and mask_path.suffix == ".mha"
    mask_image = sitk.ReadImage(str(mask_path))
    assert mask_image.GetPixelID() == sitk.sitkUInt8
    assert Geometry.of(mask_image) == Geometry.of(study.suv)
    mask = sitk.GetArrayFromImage(mask_image)
    assert set(np.unique(mask)) <= {0, 1}

    expected_mask, expected_probs = reference_prediction(
        case["model"] / "Dataset999_KitTest" / "nnUNetTrainer__nnUNetPlans__3d_fullres",
        pet=case["suv"], ct=case["ct"], spacing_zyx=case["spacing"], use_mirroring=False)
    assert 0.005 < expected_mask.mean() < 0.95  # a trivial all-or-nothing model would prove nothing
    assert dice(mask, expected_mask) >= 0.99
    decided = np.abs(expected_probs - 0.5) >= 0.005
    assert np.array_equal(mask[decided], expected_mask[decided])

    probs_image = sitk.ReadImage(str(root / "probs.mha"))
    assert Geometry.of(probs_image) == Geometry.of(study.suv)
    probs = sitk.GetArrayFromImage(probs_image)
    assert np.abs(probs - expected_probs).max() <= 1e-3


def test_container_refuses_a_model_folder_that_is_not_one(case, tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "plans.json").write_text("{}")
    result = run_algorithm("--input", case["input"].root, "--output", tmp_path / "out", "--model", tmp_path / "model",
                           "--device", "cpu")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert str(tmp_path / "model") in result.stderr
    assert output_files(tmp_path / "out") == []
