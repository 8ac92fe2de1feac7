"""CT onto the PET grid: the one resampling the algorithm container, the service and the dataset conversion use."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from petct.errors import InputError
from petct.imageio import Geometry, image_from_array

log = logging.getLogger(__name__)

CT_OUTSIDE_HU = -1024.0  # air, as the challenge's CTres uses outside the CT's field of view
MIN_CT_COVERAGE = 0.5  # below this fraction of the PET grid covered by CT, warn


def resample_ct_array(ct: sitk.Image, grid: Geometry, *, path: str | Path) -> tuple[np.ndarray, float]:
    """CT resampled onto `grid` (linear, air outside) as a float32 (z, y, x) array, and the fraction it covers.

    InputError (naming `path`) when the CT does not overlap the grid at all; a warning below half coverage.
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
    out = sitk.GetArrayFromImage(resampler.Execute(ct))
    outside = np.isnan(out)
    coverage = 1.0 - float(np.count_nonzero(outside)) / out.size
    if coverage == 0.0:
        raise InputError("CT does not overlap the PET's field of view (check origin and direction)", path=path)
    if coverage < MIN_CT_COVERAGE:
        log.warning("the CT covers only %.0f %% of the PET's field of view", 100 * coverage)
    out[outside] = CT_OUTSIDE_HU
    return out, coverage


def resample_ct_onto(ct: sitk.Image, reference: sitk.Image | Geometry, *,
                     path: str | Path) -> tuple[sitk.Image, float]:
    """CT resampled onto `reference`'s grid as a float32 image, and the fraction of that grid the CT covers."""
    grid = reference if isinstance(reference, Geometry) else Geometry.of(reference)
    out, coverage = resample_ct_array(ct, grid, path=path)
    return image_from_array(out, grid), coverage
