"""The shared package: image I/O with geometry checks, atomic writes, strict JSON, layout, phantoms."""
from __future__ import annotations

import argparse
import gzip
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from paths import REPO
from petct import jsonio, layout, phantom
from petct.argtypes import non_negative_number, positive_number, whole_number
from petct.atomic import atomic_path
from petct.errors import InputError
from petct.imageio import Geometry, grid_mismatches, read_array, read_image, require_finite, write_image_atomic


def _image(shape=(4, 5, 6), dtype=np.uint8, spacing=(1.0, 2.0, 3.0)) -> sitk.Image:
    image = sitk.GetImageFromArray(np.zeros(shape, dtype=dtype))
    image.SetSpacing(spacing)
    image.SetOrigin((10.0, -20.0, 30.0))
    return image


# --- phantom -------------------------------------------------------------------------------------

def test_phantom_is_deterministic_and_keeps_geometry(tmp_path):
    a = phantom.make_study(7, size="tiny", with_ct=True)
    b = phantom.make_study(7, size="tiny", with_ct=True)
    for name in ("suv", "ctres", "seg", "ct"):
        assert np.array_equal(sitk.GetArrayViewFromImage(getattr(a, name)), sitk.GetArrayViewFromImage(getattr(b, name)))
    folder = a.write(tmp_path)
    again = b.write(tmp_path / "again")
    for name in ("SUV", "CTres", "SEG", "CT"):
        assert (folder / f"{name}.mha").read_bytes() == (again / f"{name}.mha").read_bytes()
    suv = read_image(folder / "SUV.mha")
    geometry = Geometry.of(suv)
    assert geometry == phantom.grid(phantom.SIZES["tiny"])
    assert geometry.direction != (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    assert suv.GetPixelID() == sitk.sitkFloat32
    assert read_image(folder / "SEG.mha").GetPixelID() == sitk.sitkUInt8
    ct = read_image(folder / "CT.mha")
    assert ct.GetSize() == (128, 128, 48) and np.allclose(ct.GetOrigin(), suv.GetOrigin())


def test_full_size_grid_matches_the_dataset():
    geometry = phantom.grid(phantom.SIZES["full"])
    assert geometry.size == (400, 400, 326)
    assert np.allclose(geometry.spacing, (2.0364, 2.0364, 3.0), atol=1e-3)
    assert any(abs(o) > 1 for o in geometry.origin)


def test_phantom_has_hot_physiology_and_lesions_where_labelled():
    study = phantom.make_study(11, size="small", n_lesions=5)
    suv = sitk.GetArrayFromImage(study.suv)
    seg = sitk.GetArrayFromImage(study.seg)
    assert set(np.unique(seg)) == {0, 1}
    assert len(study.lesions) == 5
    assert all(3.0 <= lesion.suv <= 20.0 for lesion in study.lesions)
    # Physiological uptake above a naive threshold outside lesions (brain, bladder, ...).
    assert np.count_nonzero((suv >= 4) & (seg == 0)) > np.count_nonzero(seg)
    assert suv[seg == 0].max() > 15  # the bladder is very hot
    assert suv[seg == 1].mean() > 3


def test_negative_study_has_empty_label():
    study = phantom.make_study(3, size="tiny", n_lesions=0)
    assert not sitk.GetArrayViewFromImage(study.seg).any()
    # The same seed without a forced count draws a mix of positives and negatives over seeds.
    counts = [len(phantom.make_study(s, size="tiny").lesions) for s in range(12)]
    assert 0 in counts and max(counts) > 0


def test_phantom_command_line_writes_studies(tmp_path):
    result = subprocess.run([sys.executable, "-m", "petct.phantom", str(tmp_path), "--count", "2"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["PETCT_0000", "PETCT_0001"]
    assert {p.name for p in (tmp_path / "PETCT_0000").iterdir()} == {"SUV.mha", "CTres.mha", "SEG.mha"}


def test_lesions_are_3_to_40_mm_in_lungs_liver_or_lymph_nodes_and_each_is_labelled():
    allowed = set(phantom.LESION_ORGANS) | set(phantom.LYMPH_NODE_STATIONS)
    assert {"lung_r", "lung_l", "liver"} <= allowed
    # Seed 144 at size "small" draws a 12.6 mm lesion that falls between voxel centres: it must not vanish.
    for seed, size in [*((s, "tiny") for s in range(6)), (144, "small")]:
        study = phantom.make_study(seed, size=size, n_lesions=8)
        seg = sitk.GetArrayViewFromImage(study.seg)
        canvas = phantom._Canvas(Geometry.of(study.seg))
        for lesion in study.lesions:
            assert lesion.region in allowed
            assert 3.0 <= lesion.diameter_mm <= 40.0 and 3.0 <= lesion.suv <= 20.0
            box, _ = canvas.voxel_at(lesion.center_mm)
            assert seg[box].item() == 1, (seed, size, lesion)
    # At full size the smallest lesions reach down to about a voxel (3.6 mm at 3 mm slices).
    diameters = [lesion.diameter_mm for lesion in phantom._place_lesions(np.random.default_rng(0), 400, 3.6)]
    assert min(diameters) < 5.0 and max(diameters) > 30.0


def test_organs_have_physiological_uptake():
    """Brain, heart, kidneys and bladder light up like lesions do; the liver is warm; the lungs are cold."""
    expected = {name: suv for name, _, _, _, suv in phantom._ORGANS}
    assert expected["bladder"][0] >= 15 and expected["brain"][0] >= 5 and expected["kidney_r"][1] >= 5
    assert expected["heart"][1] >= 5 and 1.5 <= expected["liver"][0] <= expected["liver"][1] <= 3.0
    study = phantom.make_study(2, size="small", n_lesions=0)
    suv = sitk.GetArrayViewFromImage(study.suv)
    canvas = phantom._Canvas(Geometry.of(study.suv))
    for name, center, _, _, (low, high) in phantom._ORGANS:
        if name == "head":  # the skull shell: its centre is the brain's
            continue
        box, _ = canvas.voxel_at(phantom._mm(*center))
        assert 0.6 * low <= suv[box].item() <= 1.4 * high, name  # 8 % noise on top of the organ's value


def test_phantom_command_line_refuses_bad_arguments_in_one_line(tmp_path):
    (tmp_path / "a_file").write_text("x")
    for args, message in (([str(tmp_path / "a_file")], "cannot write the studies: Not a directory"),
                          ([str(tmp_path / "out"), "--count", "0"], "--count: must be at least 1"),
                          ([str(tmp_path / "out"), "--first-seed", "-1"], "--first-seed: must be at least 0"),
                          ([str(tmp_path / "out"), "--size", "huge"], "invalid choice: 'huge'")):
        result = subprocess.run([sys.executable, "-m", "petct.phantom", *args],
                                cwd=REPO, capture_output=True, text=True, timeout=120)
        assert result.returncode != 0, args
        assert message in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()


# --- image I/O -----------------------------------------------------------------------------------

def test_read_errors_name_the_file_and_the_problem(tmp_path):
    missing = tmp_path / "nope.mha"
    with pytest.raises(InputError, match="nope.mha.*does not exist"):
        read_image(missing)
    empty = tmp_path / "empty.mha"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty.mha.*empty"):
        read_image(empty)
    garbage = tmp_path / "garbage.mha"
    garbage.write_bytes(b"this is not an image\n" * 10)
    with pytest.raises(InputError, match="garbage.mha.*not a readable image"):
        read_image(garbage)


def test_truncated_file_is_refused(tmp_path):
    good = write_image_atomic(_image(shape=(20, 20, 20), dtype=np.float32), tmp_path / "good.mha", compress=False)
    data = good.read_bytes()
    cut = tmp_path / "cut.mha"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cut.mha"):
        read_image(cut)


@pytest.mark.parametrize("shape,expected", [((5, 6), "2D"), ((2, 3, 4, 5), "4D")])
def test_wrong_dimension_is_refused(tmp_path, shape, expected):
    path = tmp_path / "img.mha"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros(shape, np.uint8), isVector=False), str(path))
    with pytest.raises(InputError, match=f"expected a 3D image, got {expected}"):
        read_image(path)


def test_multichannel_is_refused(tmp_path):
    path = tmp_path / "rgb.mha"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((3, 4, 5, 3), np.uint8), isVector=True), str(path))
    with pytest.raises(InputError, match="one channel"):
        read_image(path)


def test_round_trip_keeps_geometry_and_values(tmp_path):
    rng = np.random.default_rng(0)
    array = rng.normal(size=(4, 5, 6)).astype(np.float32)
    geometry = Geometry(size=(6, 5, 4), spacing=(0.5, 0.7, 2.5), origin=(1.0, 2.0, 3.0),
                        direction=phantom.DIRECTION)
    from petct.imageio import image_from_array
    path = write_image_atomic(image_from_array(array, geometry), tmp_path / "sub" / "x.nii.gz")
    back, back_geometry = read_array(path)
    assert np.array_equal(back, array)
    assert np.allclose(back_geometry.spacing, geometry.spacing)
    assert np.allclose(back_geometry.direction, geometry.direction, atol=1e-6)
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)


def test_grid_mismatches_reports_each_difference():
    a = Geometry.of(_image())
    assert grid_mismatches(a, a) == []
    noisy = Geometry(size=a.size, spacing=tuple(s * (1 + 1e-6) for s in a.spacing),
                     origin=tuple(o + 1e-5 for o in a.origin), direction=a.direction)
    assert grid_mismatches(a, noisy) == []
    assert "size" in grid_mismatches(a, Geometry.of(_image(shape=(4, 5, 7))))[0]
    assert "spacing" in grid_mismatches(a, Geometry.of(_image(spacing=(1.0, 2.0, 3.1))))[0]
    moved = Geometry(size=a.size, spacing=a.spacing, origin=(10.0, -20.0, 30.5), direction=a.direction)
    assert "origin" in grid_mismatches(a, moved)[0]
    flipped = Geometry(size=a.size, spacing=a.spacing, origin=a.origin,
                       direction=(-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    assert "direction" in grid_mismatches(a, flipped)[0]


def test_require_finite():
    require_finite(np.zeros(3, np.float32), path="a.mha")
    require_finite(np.zeros(3, np.uint8), path="a.mha")
    with pytest.raises(InputError, match="a.mha.*2 NaN"):
        require_finite(np.array([1.0, np.nan, np.inf], np.float32), path="a.mha")


# --- atomic writes and strict JSON ---------------------------------------------------------------

def test_failed_atomic_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "metrics.json"
    jsonio.write_json_atomic({"a": 1}, target)
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk on fire")
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_strict_json_turns_nan_into_null():
    value = {"dice": float("nan"), "fpv": np.float32(1.5), "n": np.int64(3), "inf": math.inf,
             "list": [np.nan, 1.0], "arr": np.array([1, 2])}
    text = jsonio.dumps(value)
    assert json.loads(text) == {"dice": None, "fpv": 1.5, "n": 3, "inf": None, "list": [None, 1.0], "arr": [1, 2]}
    assert "NaN" not in text


def test_read_json_names_the_file_and_the_problem(tmp_path):
    good = tmp_path / "good.json"
    good.write_text('{"a": [1, null]}')
    assert jsonio.read_json(good, what="settings") == {"a": [1, None]}
    cases = {"missing.json": (None, "settings does not exist"),
             "folder.json": ("dir", "settings is a folder, not a file"),
             "broken.json": ("{not json", "settings is not readable JSON: Expecting property name"),
             "latin1.json": (b"\xff\xfe{", "settings is not readable JSON: not UTF-8 text")}
    for name, (content, problem) in cases.items():
        path = tmp_path / name
        if content == "dir":
            path.mkdir()
        elif isinstance(content, bytes):
            path.write_bytes(content)
        elif content is not None:
            path.write_text(content)
        with pytest.raises(InputError) as caught:
            jsonio.read_json(path, what="settings")
        assert caught.value.path == str(path) and caught.value.problem.startswith(problem), caught.value.problem
        assert "\n" not in str(caught.value)


def test_whole_number_bounds():
    port = whole_number(1, maximum=65535)
    assert port("1") == 1 and port("65535") == 65535
    for text, problem in (("0", "at least 1"), ("65536", "at most 65535"), ("8.5", "not a whole number")):
        with pytest.raises(argparse.ArgumentTypeError, match=problem):
            port(text)
    assert whole_number(0)("10000000") == 10000000  # no maximum unless asked for


@pytest.mark.parametrize("text, positive, non_negative", [
    ("2.5", 2.5, 2.5), ("0", "positive", 0.0), ("-0.1", "positive", "zero or more"), ("nan", "finite", "finite"),
    ("inf", "finite", "finite"), ("x", "not a number", "not a number")])
def test_positive_and_non_negative_numbers(text, positive, non_negative):
    for parse, expected in ((positive_number, positive), (non_negative_number, non_negative)):
        if isinstance(expected, float):
            assert parse(text) == expected
        else:
            with pytest.raises(argparse.ArgumentTypeError, match=expected):
                parse(text)


# --- layout --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,stem", [("PETCT_1_SUV.nii.gz", "PETCT_1_SUV"), ("a.MHA", "a"), ("x.nrrd", "x"),
                                       ("dir/b.mha", "b"), ("noext", "noext")])
def test_image_stem(name, stem):
    assert layout.image_stem(name) == stem


def test_list_images_ignores_hidden_and_other_files(tmp_path):
    for name in ("b.mha", "a.nii.gz", ".hidden.mha", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "dir.mha").mkdir()
    assert [p.name for p in layout.list_images(tmp_path)] == ["a.nii.gz", "b.mha"]
    assert layout.list_images(tmp_path / "missing") == []


def test_lesion_uptake_peaks_inside_and_spills_over_the_labelled_edge():
    from scipy import ndimage

    study = phantom.make_study(4, size="small", n_lesions=6)
    suv = sitk.GetArrayFromImage(study.suv)
    seg = sitk.GetArrayFromImage(study.seg).astype(bool)
    ring = ndimage.binary_dilation(seg, iterations=1) & ~seg
    body = sitk.GetArrayFromImage(study.ctres) > -500
    # Partial volume: the voxels just outside the label are warmer than the body at large ...
    assert np.median(suv[ring & body]) > 1.5 * np.median(suv[body & ~seg])
    # ... but cooler than the lesions themselves, whose uptake is highest inside.
    assert np.median(suv[ring]) < np.median(suv[seg])
    # The hottest lesion's peak survives (voxel centres miss the exact centre; noise is 8 % per voxel).
    assert suv[seg].max() >= 0.8 * max(lesion.suv for lesion in study.lesions)


def test_read_geometry_reads_the_header_alone(tmp_path):
    image = _image(shape=(4, 5, 6), spacing=(0.5, 0.7, 2.5))
    path = write_image_atomic(image, tmp_path / "x.mha", compress=False)
    from petct.imageio import read_geometry
    assert read_geometry(path) == Geometry.of(image)
    # The header alone is enough: a file cut right after its header still tells its grid ...
    header_end = path.read_bytes().index(b"ElementDataFile = LOCAL\n") + len(b"ElementDataFile = LOCAL\n")
    cut = tmp_path / "cut.mha"
    cut.write_bytes(path.read_bytes()[:header_end])
    assert read_geometry(cut) == Geometry.of(image)
    # ... while the same bad inputs as read_image's are refused with the same messages.
    with pytest.raises(InputError, match="nope.mha.*does not exist"):
        read_geometry(tmp_path / "nope.mha")
    (tmp_path / "garbage.mha").write_bytes(b"this is not an image\n" * 10)
    with pytest.raises(InputError, match="garbage.mha.*not a readable image"):
        read_geometry(tmp_path / "garbage.mha")
    flat = tmp_path / "flat.mha"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((5, 6), np.uint8)), str(flat))
    with pytest.raises(InputError, match="expected a 3D image, got 2D"):
        read_geometry(flat)


@pytest.mark.parametrize("seed", range(3))
def test_fast_gzip_writes_the_same_image_as_itks_writer(tmp_path, seed):
    """The conversion's fast path (plain NIfTI, then zlib level 1) reads back as ITK's own .nii.gz does."""
    rng = np.random.default_rng(seed)
    image = sitk.GetImageFromArray(rng.normal(size=(5, 7, 9)).astype(np.float32))
    image.SetSpacing((0.8, 1.5, 3.0))
    image.SetOrigin((-10.0, 4.5, 100.0))
    image.SetDirection((0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    fast = write_image_atomic(image, tmp_path / "fast.nii.gz", fast_gzip=True)
    slow = write_image_atomic(image, tmp_path / "itk.nii.gz")
    with gzip.open(fast) as handle:
        handle.read()  # a complete gzip stream
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fast.nii.gz", "itk.nii.gz"]  # no plain .nii left
    fast_back, slow_back = read_image(fast), read_image(slow)
    assert Geometry.of(fast_back) == Geometry.of(slow_back)  # NIfTI holds float32 spacing: both round alike
    assert grid_mismatches(Geometry.of(fast_back), Geometry.of(image)) == []
    for back in (fast_back, slow_back):
        np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image))
