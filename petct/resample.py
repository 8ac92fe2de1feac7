"""CT onto the PET grid: the one resampling the algorithm container, the service and the dataset conversion use."""
from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from petct.errors import InputError
from petct.imageio import Geometry, image_from_array, require_finite

log = logging.getLogger(__name__)

CT_OUTSIDE_HU = -1024.0  # air, as the challenge's CTres uses outside the CT's field of view
MIN_CT_COVERAGE = 0.5  # below this fraction of the PET grid covered by CT, warn
NO_OVERLAP = "CT does not overlap the PET's field of view (check origin and direction)"
# ITK's interpolators take a point as inside from half a voxel before the first index to half a voxel before
# the end; a little slack keeps the header check from refusing what the resampling would accept.
_INSIDE_SLACK = 1e-6


def resample_ct_array(ct: sitk.Image, grid: Geometry, *, path: str | Path) -> tuple[np.ndarray, float]:
    """CT resampled onto `grid` (linear, air outside) as a float32 (z, y, x) array, and the fraction it covers.

    InputError (naming `path`) when the CT does not overlap the grid at all; a warning below half coverage.
    """
    return resampled_ct_array(resample_ct_image(ct, grid), path=path)


def resample_ct_image(ct: sitk.Image, grid: Geometry) -> sitk.Image:
    """CT resampled onto `grid` (linear) as a float32 image, NaN outside the CT: resampled_ct_array's input.

    Apart from resample_ct_array so that a caller holding the only reference to a large CT can free it before
    the resampled image is copied into an array.
    """
    resampler = sitk.ResampleImageFilter()
    resampler.SetSize(grid.size)
    resampler.SetOutputSpacing(grid.spacing)
    resampler.SetOutputOrigin(grid.origin)
    resampler.SetOutputDirection(grid.direction)
    resampler.SetInterpolator(sitk.sitkLinear)
    resampler.SetOutputPixelType(sitk.sitkFloat32)
    # NaN marks voxels outside the CT (inputs are checked finite before), then becomes air.
    resampler.SetDefaultPixelValue(float("nan"))
    return resampler.Execute(ct)


def resampled_ct_array(resampled: sitk.Image, *, path: str | Path) -> tuple[np.ndarray, float]:
    """resample_ct_image's image as a float32 (z, y, x) array with air outside the CT, and the fraction covered."""
    out = sitk.GetArrayFromImage(resampled)
    outside = np.isnan(out)
    coverage = 1.0 - float(np.count_nonzero(outside)) / out.size
    if coverage == 0.0:
        raise InputError(NO_OVERLAP, path=path)
    if coverage < MIN_CT_COVERAGE:
        log.warning("the CT covers only %.0f %% of the PET's field of view", 100 * coverage)
    out[outside] = CT_OUTSIDE_HU
    return out, coverage


@dataclass
class ResampledCT:
    """A CT resampled onto a PET's grid: float32 (z, y, x) with air outside, that grid, and the note a study's notes
    keep of it (their "ct_resampled" entry)."""

    array: np.ndarray
    grid: Geometry
    note: dict[str, object]


def resample_taken_ct(images: dict[str, sitk.Image], grid: Geometry, *, mismatches: list[str],
                      path: str | Path) -> ResampledCT:
    """`images["ct"]`, a CT on another grid than the PET's, checked finite (InputError naming `path`) and resampled
    onto `grid` as a float32 (z, y, x) array with air outside, with the note a study's notes keep of it.

    The CT is taken out of `images`, so that (the caller holding no other reference) the largest image of a study
    is freed before its resampled copy is made into an array: the peak holds the CT and one resampled copy.
    """
    # NaN marks voxels outside the CT in the resampled image: the CT's own must be refused before.
    require_finite(sitk.GetArrayViewFromImage(images["ct"]), path=path, what="CT image")
    log.info("CT grid differs from the PET grid (%s): resampling CT onto the PET grid (linear, %g HU outside)",
             "; ".join(mismatches), CT_OUTSIDE_HU)
    resampled = resample_ct_image(images.pop("ct"), grid)
    array, coverage = resampled_ct_array(resampled, path=path)
    return ResampledCT(array=array, grid=grid, note=resampling_note(mismatches, coverage))


def resampling_note(mismatches: list[str], coverage: float) -> dict[str, object]:
    """What a study's notes say of a CT resampled onto the PET grid (its "ct_resampled" entry)."""
    return {"from": list(mismatches), "coverage": round(coverage, 4)}


def ct_overlaps(ct: Geometry, grid: Geometry) -> bool:
    """Whether, by the headers alone, the CT's box meets the box of `grid`'s voxel centres (no voxel is read).

    False means resample_ct_array finds no overlap either. The box around the grid's corners, taken in the CT's
    index space, holds every voxel centre of the grid; a CT that meets that box but still covers no voxel centre
    (a slab thinner than the grid's spacing, between two of its planes) is left to resample_ct_array to refuse.
    """
    corners = np.array(list(itertools.product(*[(0, n - 1) for n in grid.size])), dtype=np.float64)
    points = np.asarray(grid.origin) + (corners * np.asarray(grid.spacing)) @ _matrix(grid).T
    indices = np.linalg.solve(_matrix(ct), (points - np.asarray(ct.origin)).T).T / np.asarray(ct.spacing)
    low, high = indices.min(axis=0), indices.max(axis=0)
    return bool(np.all(high >= -0.5 - _INSIDE_SLACK) and np.all(low < np.asarray(ct.size) - 0.5 + _INSIDE_SLACK))


def _matrix(grid: Geometry) -> np.ndarray:
    dimension = len(grid.size)
    return np.asarray(grid.direction, dtype=np.float64).reshape(dimension, dimension)


def resample_ct_onto(ct: sitk.Image, reference: sitk.Image | Geometry, *,
                     path: str | Path) -> tuple[sitk.Image, float]:
    """CT resampled onto `reference`'s grid as a float32 image, and the fraction of that grid the CT covers."""
    grid = reference if isinstance(reference, Geometry) else Geometry.of(reference)
    out, coverage = resample_ct_array(ct, grid, path=path)
    return image_from_array(out, grid), coverage
