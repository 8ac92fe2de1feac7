"""The overlay MIP: component classes against a slow scipy reference, orientation, and the `mip` command."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage

from evaluation.mip import FALSE_NEGATIVE, FALSE_POSITIVE, OPACITY, PREDICTED, TRUE_POSITIVE, StudyArrays, overlay_mip
from paths import REPO
from petct.imageio import Geometry, image_from_array, write_image_atomic

STRUCTURE_18 = ndimage.generate_binary_structure(3, 2)


def _reference(suv, gt, pred, *, axis, window=(0.0, 10.0)):
    """The same picture the slow way: scipy labels, one full-volume test per component, per-pixel painting."""
    def classes(a, b):
        labels, n = ndimage.label(a, structure=STRUCTURE_18)
        hit, miss = np.zeros(a.shape, bool), np.zeros(a.shape, bool)
        for i in range(1, n + 1):
            component = labels == i
            (hit if (b & component).any() else miss)[component] = True
        return hit, miss

    gt_hit, gt_miss = classes(gt, pred)
    pred_hit, pred_miss = classes(pred, gt)
    grey = 1.0 - np.clip((suv.max(axis=axis).astype(np.float32) - window[0]) / (window[1] - window[0]), 0, 1)
    out = np.repeat((grey * 255.0 + 0.5).astype(np.uint8)[..., None], 3, axis=2)
    for colour, mask in ((FALSE_NEGATIVE, gt_miss), (FALSE_POSITIVE, pred_miss), (TRUE_POSITIVE, gt_hit | pred_hit)):
        plane = mask.any(axis=axis)
        rows, columns = plane.shape
        for r, c in zip(*np.nonzero(plane)):
            out[r, c] = (OPACITY * np.asarray(colour) + (1 - OPACITY) * out[r, c]).astype(np.uint8)
        for r, c in zip(*np.nonzero(plane)):  # the outline: a 4-neighbour outside the plane or the image
            neighbours = ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1))
            if any(not (0 <= i < rows and 0 <= j < columns) or not plane[i, j] for i, j in neighbours):
                out[r, c] = colour
    return out[::-1]


@pytest.mark.parametrize("seed", range(12))
def test_overlay_matches_a_slow_reference(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in rng.integers(4, 14, size=3))
    suv = rng.uniform(-1, 14, size=shape).astype(np.float32)
    gt = rng.uniform(size=shape) < rng.uniform(0, 0.2)
    pred = rng.uniform(size=shape) < rng.uniform(0, 0.2)
    study = StudyArrays(suv=suv, prediction=pred.astype(np.uint8), ground_truth=gt.astype(np.uint8),
                        spacing_zyx=(1.0, 1.0, 1.0))
    for view, axis in (("coronal", 1), ("sagittal", 2)):
        assert np.array_equal(overlay_mip(study, view=view), _reference(suv, gt, pred, axis=axis)), view


def test_without_ground_truth_every_predicted_voxel_shows_in_one_colour():
    pred = np.zeros((6, 5, 4), np.uint8)
    pred[1, 2, 3] = pred[4, 0, 0] = 1
    study = StudyArrays(suv=np.zeros(pred.shape, np.float32), prediction=pred, ground_truth=None,
                        spacing_zyx=(1.0, 1.0, 1.0))
    image = overlay_mip(study, view="coronal")
    coloured = {tuple(p) for p in image.reshape(-1, 3)} - {(255, 255, 255)}
    assert coloured == {PREDICTED}  # single pixels: all outline
    assert (image[::-1][1, 3] != 255).any() and (image[::-1][4, 0] != 255).any()  # head (high z) at the top


def test_thick_slices_are_stretched_to_square_pixels():
    study = StudyArrays(suv=np.zeros((10, 8, 6), np.float32), prediction=np.zeros((10, 8, 6), np.uint8),
                        ground_truth=None, spacing_zyx=(3.0, 2.0, 1.5))
    assert overlay_mip(study, view="coronal").shape == (20, 6, 3)  # 10 slices x 3 mm over 1.5 mm columns
    assert overlay_mip(study, view="sagittal").shape == (15, 8, 3)  # over 2 mm columns


def _write(array, path, spacing=(2.0, 2.0, 3.0)):
    geometry = Geometry(size=tuple(array.shape[::-1]), spacing=spacing, origin=(0.0, 0.0, 0.0),
                        direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    return write_image_atomic(image_from_array(array, geometry), path)


def test_mip_command_writes_a_png_and_names_a_file_that_does_not_fit(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib is in evaluation/report-requirements.txt")
    rng = np.random.default_rng(0)
    suv = _write(rng.uniform(0, 12, (12, 10, 8)).astype(np.float32), tmp_path / "SUV.mha")
    gt = _write((rng.uniform(size=(12, 10, 8)) < 0.1).astype(np.uint8), tmp_path / "SEG.mha")
    pred = _write((rng.uniform(size=(12, 10, 8)) < 0.1).astype(np.uint8), tmp_path / "PRED.mha")
    run = subprocess.run([sys.executable, "-m", "evaluation", "mip", str(suv), str(gt), str(pred), "--output",
                          str(tmp_path / "mip.png")], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "mip.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    small = _write(np.zeros((3, 3, 3), np.uint8), tmp_path / "small.mha")
    run = subprocess.run([sys.executable, "-m", "evaluation", "mip", str(suv), "-", str(small), "--output",
                          str(tmp_path / "bad.png")], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 1 and "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert str(small) in run.stderr and "grid" in run.stderr and not (tmp_path / "bad.png").exists()


def test_a_components_inside_keeps_the_uptake_under_it_readable():
    suv = np.zeros((9, 9, 9), np.float32)
    suv[2:7, :, 2:7] = 5.0  # SUV 5: mid grey
    pred = np.zeros(suv.shape, np.uint8)
    pred[2:7, 4, 2:7] = 1  # a 5x5 square in the coronal view
    study = StudyArrays(suv=suv, prediction=pred, ground_truth=None, spacing_zyx=(1.0, 1.0, 1.0))
    image = overlay_mip(study, view="coronal")[::-1]
    inside, edge = image[4, 4].astype(int), image[2, 4].astype(int)
    assert tuple(edge) == PREDICTED
    grey = 255 - round(0.5 * 255)
    assert np.allclose(inside, OPACITY * np.asarray(PREDICTED) + (1 - OPACITY) * grey, atol=1)
    assert OPACITY <= 0.5  # the grey under it weighs at least as much as the colour


def test_the_png_has_a_pixel_for_every_pixel_of_a_full_size_study(tmp_path):
    from PIL import Image

    from evaluation.mip import mip_png

    shape = (326, 400, 400)  # a full-size study: z, y, x at 3 x 2.04 x 2.04 mm
    study = StudyArrays(suv=np.zeros(shape, np.float32), prediction=np.zeros(shape, np.uint8), ground_truth=None,
                        spacing_zyx=(3.0, 2.04, 2.04))
    rows = overlay_mip(study, view="coronal").shape[0]
    mip_png(study, tmp_path / "mip.png", dpi=100)
    with Image.open(tmp_path / "mip.png") as png:
        assert png.height * 3.6 / 4.6 >= rows and png.width >= 2 * 400
