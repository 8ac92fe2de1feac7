"""Synthetic DICOM studies for the dataset tests, and the checks that a conversion gives the phantom back."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

from dataset.convert import ConvertOptions
from dataset.run import convert_tree
from dataset.synth import SynthOptions, SynthStudy, write_study
from petct.imageio import Geometry
from petct.resample import resample_ct_onto


def synth(root: Path, *, seed: int, n_lesions: int | None = 3, **options) -> SynthStudy:
    return write_study(root, seed=seed, n_lesions=n_lesions, options=SynthOptions(**options))


def copy_study(study: SynthStudy, root: Path) -> Path:
    """A copy of one synthetic study's DICOM under `root` (to break without touching the original)."""
    study_dir = study.pet_dir.parent
    target = root / study_dir.parent.name / study_dir.name
    shutil.copytree(study_dir, target)
    return target


def convert(root: Path, out: Path, **options) -> dict:
    """Convert `root` into `out`; records by study key."""
    summary = convert_tree(root, out, ConvertOptions(**options))
    return {r.key: r for r in summary.records}


def rewrite(paths, change) -> None:
    """Apply `change(dataset)` to each DICOM file and save it in place."""
    for path in paths:
        ds = pydicom.dcmread(path)
        change(ds)
        ds.save_as(path)


def check_against_phantom(study: SynthStudy, folder: Path, *, ext: str = ".nii.gz") -> None:
    """SUV within 16-bit storage, SEG exact, CT exact, CTres within rounding of the shared resampling."""
    suv_img = sitk.ReadImage(str(folder / f"SUV{ext}"))
    expected = sitk.GetArrayFromImage(study.phantom.suv).astype(np.float64)
    got = sitk.GetArrayFromImage(suv_img).astype(np.float64)
    assert Geometry.of(suv_img).size == Geometry.of(study.phantom.suv).size
    np.testing.assert_allclose(Geometry.of(suv_img).origin, study.phantom.suv.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(Geometry.of(suv_img).direction, study.phantom.suv.GetDirection(), atol=1e-6)
    np.testing.assert_allclose(Geometry.of(suv_img).spacing, study.phantom.suv.GetSpacing(), rtol=1e-6)
    # Half a stored unit of each slice (its rescale slope) in SUV, plus float32 rounding.
    slope_suv = np.abs(expected).max(axis=(1, 2)) / 32767
    tolerance = 0.5 * slope_suv[:, None, None] * 1.0001 + 1e-5 * np.abs(expected) + 1e-7
    assert np.all(np.abs(got - expected) <= tolerance)
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / f"SEG{ext}")))
    np.testing.assert_array_equal(seg, sitk.GetArrayFromImage(study.phantom.seg))
    if (folder / f"CT{ext}").exists():
        ct = sitk.ReadImage(str(folder / f"CT{ext}"))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(ct), sitk.GetArrayFromImage(study.ct))
    ctres = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / f"CTres{ext}"))).astype(np.float64)
    reference, _ = resample_ct_onto(study.ct, study.phantom.suv, path="ct")
    assert np.abs(ctres - sitk.GetArrayFromImage(reference)).max() <= 0.5 + 1e-3
