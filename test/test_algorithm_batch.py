"""`python -m algorithm predict-folder`: every layout, the single-study masks, failures that keep the rest."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from algorithm.batch_inputs import find_cases
from algorithm.runinfo import parse_ran_line
from algorithm_helpers import output_files, run_algorithm, write_platform_input
from nnunet_helpers import require_nnunetv2
from petct.errors import InputError
from petct.imageio import write_image_atomic
from petct.phantom import make_study

require_nnunetv2()

SIZE = (24, 24, 20)
SEEDS = (31, 32, 33)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, nnunet_case):
    root = tmp_path_factory.mktemp("batch")
    model = nnunet_case.copy_model(root / "model") / "Dataset999_KitTest" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    shutil.rmtree(model / "fold_1")  # one fold
    studies = [make_study(seed, size=SIZE, n_lesions=3, name=f"PETCT_{seed}") for seed in SEEDS]
    single = {}
    for study in studies:  # the reference: one single-study container run each
        platform = write_platform_input(root / "platform" / study.name, study)
        result = run_algorithm("--input", platform.root, "--output", root / "single" / study.name, "--model", model,
                               "--device", "cpu", "--no-tta")
        assert result.returncode == 0, result.stderr
        [mask] = output_files(root / "single" / study.name)
        single[study.name] = sitk.GetArrayFromImage(sitk.ReadImage(str(mask)))
    return {"root": root, "model": model, "studies": studies, "single": single}


def _array(path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def _predict_folder(setup, folder, out, *extra):
    return run_algorithm("predict-folder", folder, out, "--model", setup["model"], "--device", "cpu", "--no-tta",
                         *extra)


@pytest.mark.slow
def test_every_layout_gives_the_single_study_masks(setup, tmp_path):
    raw, flat, nested = tmp_path / "raw", tmp_path / "flat", tmp_path / "nested"
    a, b, c = setup["studies"]
    for study in (a, b, c):
        # nnU-Net raw layout, channels in dataset.json's order: 0000 CT, 0001 PET.
        write_image_atomic(study.ctres, raw / f"{study.name}_0000.nii.gz")
        write_image_atomic(study.suv, raw / f"{study.name}_0001.nii.gz")
    a.write(flat)
    b.write(flat)
    a.write(nested / "PETCT_x" / "06-2001 PET-CT")  # two studies of one patient, dataset's date folders
    shutil.move(nested / "PETCT_x" / "06-2001 PET-CT" / a.name, nested / "PETCT_x" / "06.2001")
    shutil.rmtree(nested / "PETCT_x" / "06-2001 PET-CT")
    c.write(nested / "PETCT_x")
    shutil.move(nested / "PETCT_x" / c.name, nested / "PETCT_x" / "07.2002")

    result = _predict_folder(setup, raw, tmp_path / "out_raw")
    assert result.returncode == 0, result.stderr
    for study in (a, b, c):
        assert np.array_equal(_array(tmp_path / "out_raw" / f"{study.name}.nii.gz"), setup["single"][study.name])
    summary = parse_ran_line(result.stderr)
    assert summary["engine"] == "nnunet" and summary["folds"] == [0]

    result = _predict_folder(setup, flat, tmp_path / "out_flat", "--suffix", ".mha")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "out_flat").iterdir()) == [f"{a.name}.mha", f"{b.name}.mha"]
    assert np.array_equal(_array(tmp_path / "out_flat" / f"{b.name}.mha"), setup["single"][b.name])

    result = _predict_folder(setup, nested, tmp_path / "out_nested")
    assert result.returncode == 0, result.stderr
    assert np.array_equal(_array(tmp_path / "out_nested" / "PETCT_x__06_2001.nii.gz"), setup["single"][a.name])
    assert np.array_equal(_array(tmp_path / "out_nested" / "PETCT_x__07_2002.nii.gz"), setup["single"][c.name])


@pytest.mark.slow
def test_a_broken_study_is_one_line_and_the_others_are_written(setup, tmp_path):
    folder = tmp_path / "in"
    a, b, c = setup["studies"]
    for study in (a, b, c):
        study.write(folder)
    (folder / b.name / "SUV.mha").write_bytes(b"not an image")
    (folder / "lonely").mkdir()
    (folder / "lonely" / "SUV.nii.gz").write_bytes(b"")
    result = _predict_folder(setup, folder, tmp_path / "out")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"{a.name}.nii.gz", f"{c.name}.nii.gz"]
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 2, result.stderr
    assert str(folder / b.name / "SUV.mha") in errors[0]
    assert f"{folder / 'lonely'}: expected one SUV and one CTres image, found 1 and 0" in result.stderr
    assert "2 of 4 studies written" in result.stderr
    assert np.array_equal(_array(tmp_path / "out" / f"{c.name}.nii.gz"), setup["single"][c.name])


@pytest.mark.slow
def test_unusable_model_or_empty_folder_is_one_line(setup, tmp_path):
    (tmp_path / "empty").mkdir()
    result = _predict_folder(setup, tmp_path / "empty", tmp_path / "out")
    assert result.returncode == 2 and "no studies found" in result.stderr and "Traceback" not in result.stderr
    result = run_algorithm("predict-folder", tmp_path / "empty", tmp_path / "out", "--model",
                           setup["model"] / "fold_0")
    assert result.returncode == 2 and "this is a fold folder" in result.stderr


def test_raw_layout_channels_follow_the_model_and_incomplete_cases_are_named(tmp_path):
    for name in ("a_0000.nii.gz", "a_0001.nii.gz", "b_0000.nii.gz", "c_0001.mha", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    found = find_cases(tmp_path, roles=("pet", "ct"))
    [case] = found.cases
    assert (case.key, case.pet.name, case.ct.name) == ("a", "a_0000.nii.gz", "a_0001.nii.gz")
    assert len(found.problems) == 2 and "b_0000.nii.gz" in found.problems[0] and "c_0001.mha" in found.problems[1]
    [case] = find_cases(tmp_path, roles=("ct", "pet")).cases
    assert (case.pet.name, case.ct.name) == ("a_0001.nii.gz", "a_0000.nii.gz")
    pet_only = find_cases(tmp_path, roles=("pet",))
    assert pet_only.cases == [] and "are not one PET and one CT" in pet_only.problems[0]


def test_colliding_study_keys_are_refused(tmp_path):
    for folder in ("p.1", "p_1"):
        (tmp_path / folder).mkdir()
        for name in ("SUV.nii.gz", "CTres.nii.gz"):
            (tmp_path / folder / name).write_bytes(b"")
    found = find_cases(tmp_path, roles=("ct", "pet"))
    assert found.cases == [] and "share the output name 'p_1'" in found.problems[0]
    with pytest.raises(InputError, match="input folder does not exist"):
        find_cases(tmp_path / "missing", roles=("ct", "pet"))
