"""The slice viewer's volumes (app.service.viewer) against slow references; the page itself is in test_app_browser."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from app.service.viewer import Label, StudyFiles, Volume, component_labels, viewer_volume
from petct.imageio import Geometry, image_from_array, read_array, write_image_atomic

EIGHTEEN = ndimage.generate_binary_structure(3, 2)  # faces and edges: the metrics' 18-connectivity


def _reference_labels(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Component by component with scipy: touching the other mask is a true positive, else FP or FN."""
    out = np.zeros(gt.shape, dtype=np.uint8)
    for mask, other, missed in ((gt, pred, Label.false_negative), (pred, gt, Label.false_positive)):
        labels, count = ndimage.label(mask, structure=EIGHTEEN)
        for component in range(1, count + 1):
            voxels = labels == component
            touched = bool((other[voxels] != 0).any())
            if touched:
                out[voxels] = Label.true_positive
            elif not (out[voxels] == Label.true_positive).any():
                out[voxels] = missed
    return out


@pytest.mark.parametrize("seed", range(40))
def test_component_labels_match_a_slow_reference(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(rng.integers(3, 14, size=3))
    gt = (rng.uniform(size=shape) < rng.uniform(0.0, 0.25)).astype(np.uint8)
    pred = (rng.uniform(size=shape) < rng.uniform(0.0, 0.25)).astype(np.uint8) * rng.integers(1, 3)
    got = component_labels(ground_truth=gt, prediction=pred)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, _reference_labels(gt, pred))


def test_volumes_keep_values_and_geometry(tmp_path):
    rng = np.random.default_rng(3)
    pet_grid = Geometry(size=(9, 8, 7), spacing=(2.0, 2.5, 3.0), origin=(-10.0, 4.0, 7.5),
                        direction=(0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    ct_grid = Geometry(size=(18, 16, 7), spacing=(1.0, 1.25, 3.0), origin=(-10.5, 3.5, 7.5),
                       direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    suv = rng.gamma(2.0, 1.5, size=(7, 8, 9)).astype(np.float32)
    ct = rng.uniform(-1100.0, 40000.0, size=(7, 16, 18)).astype(np.float32)  # beyond int16 at the top
    gt = (rng.uniform(size=suv.shape) < 0.2).astype(np.uint8)
    pred = (rng.uniform(size=suv.shape) < 0.2).astype(np.uint8)
    files = {"pet": "pet.nii.gz", "ct": "ct.mha", "label": "label.nrrd"}
    for name, array, grid in (("pet", suv, pet_grid), ("ct", ct, ct_grid), ("label", gt, pet_grid)):
        write_image_atomic(image_from_array(array, grid), tmp_path / files[name])
    write_image_atomic(image_from_array(pred, pet_grid), tmp_path / "mask.mha")

    study = StudyFiles(ct=tmp_path / files["ct"], pet=tmp_path / files["pet"], mask=tmp_path / "mask.mha",
                       label=tmp_path / files["label"])

    def made(volume: Volume) -> tuple[np.ndarray, Geometry]:
        path = viewer_volume(cache=tmp_path / "viewer", files=study, volume=volume)
        assert path.name == f"{volume.value}.nii.gz" and path.parent == tmp_path / "viewer"
        return read_array(path)

    expected = {Volume.ct: (np.clip(np.rint(ct), -32768, 32767), ct_grid, sitk.sitkInt16),
                Volume.suv: (suv, pet_grid, sitk.sitkFloat32),
                Volume.prediction: (pred, pet_grid, sitk.sitkUInt8),
                Volume.components: (_reference_labels(gt, pred), pet_grid, sitk.sitkUInt8)}
    for volume, (array, grid, pixel) in expected.items():
        got, geometry = made(volume)
        np.testing.assert_array_equal(got, array, err_msg=volume.value)
        assert geometry.size == grid.size and np.allclose(geometry.spacing, grid.spacing)
        assert np.allclose(geometry.origin, grid.origin) and np.allclose(geometry.direction, grid.direction, atol=1e-6)
        assert sitk.ReadImage(str(tmp_path / "viewer" / f"{volume.value}.nii.gz")).GetPixelID() == pixel
