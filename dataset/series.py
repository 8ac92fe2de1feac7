"""One DICOM image series (CT or PET slices) as a checked (z, y, x) array on its grid."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

from petct.errors import InputError
from petct.imageio import Geometry

# Slice steps may differ by writer rounding; a step this much larger than the usual one is a missing slice.
STEP_RTOL = 0.01
ORIENTATION_ATOL = 1e-4


@dataclass(frozen=True)
class Series:
    """Rescaled voxel values (z, y, x), the grid, and the slices in grid order."""

    array: np.ndarray
    geometry: Geometry
    slices: tuple[Dataset, ...]


def orientation(ds: Dataset) -> tuple[np.ndarray, np.ndarray]:
    iop = ds.get("ImageOrientationPatient")
    if iop is None or len(iop) != 6:
        raise InputError("ImageOrientationPatient is missing or malformed")
    values = np.array([float(v) for v in iop])
    if not np.isfinite(values).all():
        raise InputError(f"ImageOrientationPatient is {list(iop)}: not finite numbers")
    return values[:3], values[3:]


def position(ds: Dataset) -> np.ndarray:
    ipp = ds.get("ImagePositionPatient")
    if ipp is None or len(ipp) != 3:
        raise InputError(f"ImagePositionPatient is missing in instance {ds.get('SOPInstanceUID', '?')}")
    values = np.array([float(v) for v in ipp])
    if not np.isfinite(values).all():
        raise InputError(f"ImagePositionPatient is {list(ipp)} in instance {ds.get('SOPInstanceUID', '?')}: "
                         "not finite numbers")
    return values


def pixel_spacing(ds: Dataset) -> tuple[float, float]:
    """(row, column) spacing in mm; InputError naming the tag unless two finite, positive numbers."""
    value = ds.get("PixelSpacing")
    try:
        row, col = (float(v) for v in value)
    except (TypeError, ValueError):
        raise InputError(f"PixelSpacing is missing or malformed in instance {ds.get('SOPInstanceUID', '?')}") \
            from None
    if not all(math.isfinite(v) and v > 0 for v in (row, col)):
        raise InputError(f"PixelSpacing is {[row, col]} in instance {ds.get('SOPInstanceUID', '?')}: it must be "
                         "two positive numbers (mm)")
    return row, col


def check_and_sort(slices: Sequence[Dataset]) -> tuple[list[Dataset], Geometry]:
    """Slices sorted along the normal and the series grid, or InputError naming the inconsistency."""
    if len(slices) < 2:
        raise InputError(f"a series needs at least 2 slices, got {len(slices)}")
    row, col = orientation(slices[0])
    for ds in slices[1:]:
        r, c = orientation(ds)
        if not (np.allclose(r, row, atol=ORIENTATION_ATOL) and np.allclose(c, col, atol=ORIENTATION_ATOL)):
            raise InputError("slices with more than one orientation (ImageOrientationPatient differs)")
    normal = np.cross(row, col)
    shapes = {(int(ds.Rows), int(ds.Columns)) for ds in slices}
    spacings = {tuple(round(v, 6) for v in pixel_spacing(ds)) for ds in slices}
    if len(shapes) != 1 or len(spacings) != 1:
        raise InputError(f"slices differ in size {sorted(shapes)} or pixel spacing {sorted(spacings)}")
    ordered = sorted(slices, key=lambda ds: float(position(ds) @ normal))
    along = np.array([float(position(ds) @ normal) for ds in ordered])
    steps = np.diff(along)
    if np.any(steps <= 1e-6):
        dup = int(np.argmin(steps))
        raise InputError(f"two slices at the same position {along[dup]:.2f} mm (duplicate or mixed series)")
    step = float(np.median(steps))
    bad = np.flatnonzero(np.abs(steps - step) > STEP_RTOL * step)
    if bad.size:
        i = int(bad[0])
        missing = round(steps[i] / step) - 1
        what = f"{missing} missing slice(s)" if missing >= 1 else "inconsistent slice spacing"
        raise InputError(f"{what}: gap of {steps[i]:.2f} mm between {along[i]:.2f} and {along[i + 1]:.2f} mm "
                         f"along the normal (spacing {step:.2f} mm elsewhere)")
    rows, cols = shapes.pop()
    row_spacing, col_spacing = pixel_spacing(ordered[0])
    direction = np.stack([row, col, normal], axis=1)  # columns: the x, y and z axes in patient space
    geometry = Geometry(size=(cols, rows, len(ordered)), spacing=(col_spacing, row_spacing, step),
                        origin=tuple(float(v) for v in position(ordered[0])),
                        direction=tuple(float(v) for v in direction.ravel()))
    return ordered, geometry


def rescale(ds: Dataset) -> tuple[float, float]:
    return float(ds.get("RescaleSlope", 1.0) or 1.0), float(ds.get("RescaleIntercept", 0.0) or 0.0)


def read_series(slices: Sequence[Dataset], *, dtype=np.float32) -> Series:
    """The series' voxels with each slice's own rescale applied, as `dtype`.

    Integer `dtype` (CT in HU) is exact when every slope and intercept is a whole number, as CT writers use.
    Each slice's PixelData is released once decoded (the headers stay), so a series is not held twice.
    """
    ordered, geometry = check_and_sort(slices)
    nx, ny, nz = geometry.size
    out = np.empty((nz, ny, nx), dtype=dtype)
    for k, ds in enumerate(ordered):
        slope, intercept = rescale(ds)
        stored = ds.pixel_array
        if np.issubdtype(dtype, np.integer) and slope == int(slope) and intercept == int(intercept):
            out[k] = stored.astype(np.int32) * int(slope) + int(intercept)
        elif np.issubdtype(dtype, np.integer):
            out[k] = np.rint(stored * slope + intercept)
        else:
            out[k] = stored.astype(np.float64) * slope + intercept
        del ds.PixelData
    return Series(array=out, geometry=geometry, slices=tuple(ordered))
