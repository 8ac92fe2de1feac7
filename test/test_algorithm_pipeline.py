"""The pipeline's parts in-process: input discovery, CT resampling, the engine contract, option checks."""
from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk

from algorithm import cli, failures
from algorithm.engine_contract import Prediction
from algorithm.pipeline import StudyInputs, check_probabilities_path, find_study_inputs, run_container, segment_study
from algorithm_helpers import output_files, write_platform_input
from petct.editions import EDITIONS
from petct.errors import InputError
from petct.imageio import Geometry
from petct.phantom import make_study
from petct.resample import CT_OUTSIDE_HU, ct_overlaps, resample_ct_array
from petct.resample import resample_ct_onto as resample_onto


def _rotation_z(angle: float) -> tuple[float, ...]:
    c, s = math.cos(angle), math.sin(angle)
    return (c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0)


def _random_image(rng, size, spacing, origin, angle) -> sitk.Image:
    image = sitk.GetImageFromArray(rng.normal(0, 300, size=size[::-1]).astype(np.float32))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(_rotation_z(angle))
    return image


def _resample_reference(ct: sitk.Image, reference: sitk.Image) -> np.ndarray:
    """Slow reference: evaluate the CT by linear interpolation at each reference voxel's physical point."""
    nx, ny, nz = reference.GetSize()
    out = np.empty((nz, ny, nx), dtype=np.float64)
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                point = reference.TransformIndexToPhysicalPoint((x, y, z))
                try:
                    out[z, y, x] = ct.EvaluateAtPhysicalPoint(point, sitk.sitkLinear)
                except RuntimeError:  # outside the CT
                    out[z, y, x] = CT_OUTSIDE_HU
    return out


def _random_grid(rng) -> Geometry:
    """A small grid with a random 3D rotation (QR of a random matrix, determinant +1) and a far-ranging origin."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return Geometry(size=tuple(int(n) for n in rng.integers(2, 9, 3)), spacing=tuple(rng.uniform(0.5, 4.0, 3)),
                    origin=tuple(rng.uniform(-20, 20, 3)), direction=tuple(q.ravel()))


def test_the_header_overlap_check_never_refuses_what_resampling_accepts():
    """ct_overlaps (headers only) against resample_ct_array's coverage on many random CT and PET grids."""
    rng = np.random.default_rng(19)
    outcomes = set()
    for _ in range(300):
        ct_grid, pet_grid = _random_grid(rng), _random_grid(rng)
        ct = ct_grid.apply_to(sitk.GetImageFromArray(np.zeros(ct_grid.size[::-1], np.int16)))
        try:
            resample_ct_array(ct, pet_grid, path="ct.mha")
            covered = True
        except InputError:
            covered = False
        overlaps = ct_overlaps(ct_grid, pet_grid)
        assert overlaps or not covered, (ct_grid, pet_grid)
        outcomes.add((overlaps, covered))
    assert {(True, True), (False, False)} <= outcomes  # both answers were exercised


@pytest.mark.parametrize("seed", range(6))
def test_resample_onto_matches_pointwise_interpolation(seed):
    rng = np.random.default_rng(seed)
    ct = _random_image(rng, (9, 8, 7), tuple(rng.uniform(0.5, 2.0, 3)), tuple(rng.uniform(-3, 3, 3)),
                       rng.uniform(-0.2, 0.2))
    pet = _random_image(rng, (6, 5, 4), tuple(rng.uniform(1.0, 3.0, 3)), tuple(rng.uniform(-4, 4, 3)),
                        rng.uniform(-0.2, 0.2))
    expected = _resample_reference(ct, pet)
    if (expected == CT_OUTSIDE_HU).all():
        with pytest.raises(InputError, match="does not overlap"):
            resample_onto(ct, pet, path="ct.mha")
        return
    resampled, coverage = resample_onto(ct, pet, path="ct.mha")
    assert resampled.GetSize() == pet.GetSize() and resampled.GetOrigin() == pet.GetOrigin()
    np.testing.assert_allclose(sitk.GetArrayFromImage(resampled), expected, rtol=1e-4, atol=1e-2)
    assert coverage == pytest.approx(np.mean(expected != CT_OUTSIDE_HU))


def test_ct_outside_pet_is_an_error():
    rng = np.random.default_rng(0)
    ct = _random_image(rng, (5, 5, 5), (1.0, 1.0, 1.0), (100.0, 0.0, 0.0), 0.0)
    pet = _random_image(rng, (5, 5, 5), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), 0.0)
    with pytest.raises(InputError, match="does not overlap"):
        resample_onto(ct, pet, path="ct.mha")


def test_find_study_inputs_lists_what_it_found(tmp_path):
    inputs = write_platform_input(tmp_path, make_study(0, size="tiny"))
    edition = EDITIONS["autopet-2022"]
    assert find_study_inputs(tmp_path, edition=edition) == StudyInputs(pet_path=inputs.pet, ct_path=inputs.ct)
    (inputs.ct.parent / "notes.txt").write_text("x")
    inputs.ct.rename(inputs.ct.with_suffix(".dcm"))
    with pytest.raises(InputError, match=r"expected exactly one CT image, found 0: none \(other entries: "):
        find_study_inputs(tmp_path, edition=edition)


class RecordingEngine:
    """Answers with a fixed mask and keeps what it was given."""

    name = "recording"

    def __init__(self, mask_of=lambda pet: (pet > 4).astype(np.uint8), probabilities=True):
        self.mask_of = mask_of
        self.probabilities = probabilities
        self.calls = []

    def describe(self):
        return {"engine": self.name}

    def predict(self, *, pet, ct, spacing_zyx):
        self.calls.append((pet, ct, spacing_zyx))
        probabilities = np.clip(pet / 10, 0, 1).astype(np.float32) if self.probabilities else None
        return Prediction(mask=self.mask_of(pet), probabilities=probabilities, timings={"net": 0.1},
                          notes={"folds": [0]})


def test_segment_study_gives_the_engine_pet_grid_arrays(tmp_path):
    study = make_study(2, size="tiny", with_ct=True)
    inputs = write_platform_input(tmp_path, study, ct=study.ct)
    engine = RecordingEngine()
    result = segment_study(pet_path=inputs.pet, ct_path=inputs.ct, engine=engine)
    [(pet, ct, spacing)] = engine.calls
    assert pet.dtype == ct.dtype == np.float32
    assert pet.shape == ct.shape == sitk.GetArrayFromImage(study.suv).shape
    np.testing.assert_array_equal(pet, sitk.GetArrayFromImage(study.suv))
    assert spacing == study.suv.GetSpacing()[::-1]
    # CT resampled from the finer grid is close to the CT painted on the PET grid (edges blur).
    assert np.median(np.abs(ct - sitk.GetArrayFromImage(study.ctres))) < 20
    assert result.mask.GetPixelID() == sitk.sitkUInt8
    for image in (result.mask, result.probabilities):
        assert image.GetSize() == study.suv.GetSize()
        assert image.GetDirection() == study.suv.GetDirection() and image.GetOrigin() == study.suv.GetOrigin()
    assert result.notes["folds"] == [0] and "ct_resampled" in result.notes
    assert result.timings["predict/net"] == 0.1


@pytest.mark.parametrize("bad_mask", [lambda pet: (pet > 4).astype(np.uint8) * 2,
                                      lambda pet: np.zeros((2, 2, 2), np.uint8)])
def test_engine_breaking_the_mask_contract_is_caught(tmp_path, bad_mask):
    inputs = write_platform_input(tmp_path, make_study(2, size="tiny"))
    with pytest.raises(RuntimeError, match="engine recording returned"):
        segment_study(pet_path=inputs.pet, ct_path=inputs.ct, engine=RecordingEngine(bad_mask))


def test_run_container_writes_the_mask_and_probabilities_apart(tmp_path):
    inputs = write_platform_input(tmp_path / "in", make_study(2, size="tiny"))
    out, probabilities = tmp_path / "out", tmp_path / "scratch" / "p.mha"
    path = run_container(input_dir=inputs.root, output_dir=out, engine=RecordingEngine(),
                         edition=EDITIONS["autopet-2022"], probabilities_path=probabilities)
    assert output_files(out) == [path]
    written = sitk.GetArrayFromImage(sitk.ReadImage(str(probabilities)))
    np.testing.assert_allclose(written, np.clip(sitk.GetArrayFromImage(sitk.ReadImage(str(inputs.pet))) / 10, 0, 1))


def test_probabilities_path_must_be_outside_output(tmp_path):
    out = tmp_path / "out"
    check_probabilities_path(None, output_dir=out)
    check_probabilities_path(tmp_path / "p.mha", output_dir=out)
    check_probabilities_path(tmp_path / "out-other" / "p.mha", output_dir=out)
    for inside in (out / "p.mha", out / "images" / "x" / "p.mha", tmp_path / "a" / ".." / "out" / "p.mha"):
        with pytest.raises(InputError, match="outside the output folder"):
            check_probabilities_path(inside, output_dir=out)



@pytest.mark.parametrize("name, problem", [
    ("input/p.mha", "outside the input folder"),
    ("p.txt", "needs an image file name ending in .mha"),
    ("p.npy", "needs an image file name ending in .mha"),
    ("folder.mha", "names a folder"),
    ("a-file/p.mha", "not a writable folder"),
])
def test_probabilities_path_that_cannot_be_written_is_refused_before_any_work(tmp_path, name, problem):
    (tmp_path / "folder.mha").mkdir()
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(InputError, match=problem) as info:
        check_probabilities_path(tmp_path / name, output_dir=tmp_path / "out", input_dir=tmp_path / "input")
    assert name.split("/")[-1] in str(info.value)
    for fine in ("p.mha", "new/deeper/p.nii.gz", "P.NRRD"):
        check_probabilities_path(tmp_path / fine, output_dir=tmp_path / "out", input_dir=tmp_path / "input")


def test_command_line_becomes_engine_options():
    args = cli.parse_args(["--folds", "0,2", "--no-tta", "--step-size", "0.75", "--time-budget", "240",
                           "--channel-order", "CT,pet", "--compile", "--device", "cpu",
                           "--save-probabilities", "/tmp/p.mha"])
    options = cli.engine_options(args, clock_start=12.5)
    assert (options.folds, options.use_mirroring, options.step_size, options.time_budget_s) == ((0, 2), False, 0.75, 240)
    assert (options.channel_order, options.compile, options.device) == (("ct", "pet"), True, "cpu")
    assert (options.clock_start, options.probabilities) == (12.5, True)
    defaults = cli.engine_options(cli.parse_args([]))
    # Without --save-probabilities the engine is told not to compute the map at all.
    assert (defaults.folds, defaults.use_mirroring, defaults.channel_order, defaults.probabilities) == (
        None, True, None, False)


@pytest.mark.parametrize("argv", [["--folds", "a"], ["--folds", "0,0"], ["--step-size", "0"],
                                  ["--channel-order", "ct,mri"], ["--time-budget", "-1"], ["--engine", "x"]])
def test_bad_options_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as info:
        cli.parse_args(argv)
    assert info.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


class OutOfMemoryError(RuntimeError):
    """Named like torch.cuda.OutOfMemoryError."""


@pytest.mark.parametrize("exc, code, text", [
    (InputError("NaN", path="/input/x.mha"), failures.EXIT_INPUT, "error: file /input/x.mha: NaN"),
    (OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB\nmore"), failures.EXIT_MEMORY,
     "out of memory: CUDA out of memory. Tried to allocate 2 GiB (try"),
    (MemoryError(), failures.EXIT_MEMORY, "out of memory"),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried "
                  "to allocate 845000000 bytes."), failures.EXIT_MEMORY, "out of memory: [enforce fail"),
    (PermissionError(13, "Permission denied", "/output/x"), failures.EXIT_INPUT, "error: cannot access /output/x: Permission denied"),
    (ValueError("bug\nsecond line"), failures.EXIT_INTERNAL, "internal error: ValueError: bug (PETCT_KIT_DEBUG"),
])
def test_failures_become_one_line_and_a_code(exc, code, text):
    got_code, message = failures.describe_failure(exc)
    assert got_code == code and message.startswith(text) and "\n" not in message
