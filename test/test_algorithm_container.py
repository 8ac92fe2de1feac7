"""`python -m algorithm` as the platform runs it: one study in a read-only /input, one mask in /output."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from algorithm.engine_choice import MODEL_SEARCH_PATH
from algorithm_helpers import output_files, run_algorithm, set_read_only, tree_snapshot, write_platform_input
from petct.editions import EDITIONS
from petct.imageio import write_image_atomic
from petct.phantom import make_study


@pytest.fixture(scope="module")
def study():
    return make_study(1, size="tiny", with_ct=True)  # positive study, CT also on a finer grid


@pytest.fixture
def platform_input(tmp_path, study):
    inputs = write_platform_input(tmp_path / "input", study)
    yield inputs
    set_read_only(inputs.root, False)  # let pytest clean up


def _assert_one_line_failure(result, *needles):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


def test_contract_on_read_only_input(tmp_path, platform_input, study):
    set_read_only(platform_input.root, True)
    before = tree_snapshot(platform_input.root)
    out = tmp_path / "output"
    result = run_algorithm("--input", platform_input.root, "--output", out)
    assert result.returncode == 0, result.stderr
    assert tree_snapshot(platform_input.root) == before
    files = output_files(out)
    assert files == [out / EDITIONS["autopet-2022"].output_relative_path / f"{platform_input.pet.stem}.mha"]
    mask = sitk.ReadImage(str(files[0]))
    pet = sitk.ReadImage(str(platform_input.pet))
    assert mask.GetPixelID() == sitk.sitkUInt8
    assert mask.GetSize() == pet.GetSize()
    assert mask.GetSpacing() == pet.GetSpacing()
    assert mask.GetOrigin() == pet.GetOrigin()
    assert mask.GetDirection() == pet.GetDirection()
    values = sitk.GetArrayFromImage(mask)
    assert set(np.unique(values).tolist()) <= {0, 1}
    assert values.any()  # a positive study with hot lesions: the baseline finds some
    # Which engine ran, and why, is in the log, with the time of each stage.
    if not any(p.exists() for p in MODEL_SEARCH_PATH):
        assert "falling back to the weight-free baseline engine" in result.stderr
    assert '"engine": "baseline"' in result.stderr
    for stage in ("read inputs", "predict", "write mask"):
        assert f"{stage}: " in result.stderr


def test_ct_on_another_grid_is_resampled(tmp_path, study):
    inputs = write_platform_input(tmp_path / "input", study, ct=study.ct)
    out = tmp_path / "output"
    result = run_algorithm("--input", inputs.root, "--output", out, "--engine", "baseline")
    assert result.returncode == 0, result.stderr
    assert "resampling CT onto the PET grid" in result.stderr
    [path] = output_files(out)
    assert sitk.ReadImage(str(path)).GetSize() == study.suv.GetSize()


@pytest.mark.parametrize("case", ["no_pet", "two_pets", "corrupt", "truncated", "nan_suv", "no_ct_folder"])
@pytest.mark.slow
def test_bad_input_fails_with_one_line(tmp_path, platform_input, study, case):
    pet_dir = platform_input.pet.parent
    needles: tuple[str, ...]
    if case == "no_pet":
        platform_input.pet.unlink()
        needles = (str(pet_dir), "expected exactly one PET image, found 0")
    elif case == "two_pets":
        write_image_atomic(study.suv, pet_dir / "second.mha")
        needles = (str(pet_dir), "found 2", platform_input.pet.name, "second.mha")
    elif case == "corrupt":
        platform_input.pet.write_bytes(b"this is not an image at all\n" * 10)
        needles = (str(platform_input.pet), "not a readable image")
    elif case == "truncated":
        data = platform_input.ct.read_bytes()
        platform_input.ct.write_bytes(data[: len(data) // 2])
        needles = (str(platform_input.ct),)
    elif case == "nan_suv":
        array = sitk.GetArrayFromImage(study.suv)
        array[3, 4, 5] = np.nan
        bad = sitk.GetImageFromArray(array)
        bad.CopyInformation(study.suv)
        write_image_atomic(bad, platform_input.pet)
        needles = (str(platform_input.pet), "NaN")
    else:
        for path in platform_input.ct.parent.iterdir():
            path.unlink()
        platform_input.ct.parent.rmdir()
        needles = ("images/ct", "does not exist")
    set_read_only(platform_input.root, True)
    out = tmp_path / "output"
    result = run_algorithm("--input", platform_input.root, "--output", out, "--engine", "baseline")
    _assert_one_line_failure(result, *needles)
    assert output_files(out) == []


def test_probabilities_inside_output_refused(tmp_path, platform_input):
    out = tmp_path / "output"
    result = run_algorithm("--input", platform_input.root, "--output", out,
                           "--save-probabilities", out / "probabilities.mha")
    _assert_one_line_failure(result, "--save-probabilities must be outside the output folder")
    assert output_files(out) == []


def test_probabilities_outside_output_without_engine_support(tmp_path, platform_input):
    out = tmp_path / "output"
    result = run_algorithm("--input", platform_input.root, "--output", out, "--engine", "baseline",
                           "--save-probabilities", tmp_path / "elsewhere" / "p.mha")
    assert result.returncode == 0, result.stderr
    assert "gives no probabilities" in result.stderr
    assert len(output_files(out)) == 1


def test_missing_explicit_model_is_an_error_not_a_fallback(tmp_path, platform_input):
    out = tmp_path / "output"
    result = run_algorithm("--input", platform_input.root, "--output", out, "--model", tmp_path / "no-such-model")
    _assert_one_line_failure(result, str(tmp_path / "no-such-model"), "model folder does not exist")
    assert "baseline" not in result.stderr
    assert output_files(out) == []


def test_unwritable_output_fails_cleanly(tmp_path, platform_input):
    blocker = tmp_path / "output"
    blocker.write_text("a file where the output folder should be")
    result = run_algorithm("--input", platform_input.root, "--output", blocker, "--engine", "baseline")
    _assert_one_line_failure(result, "error:")
