"""Reading a lesion mask file and checking that it is one: integer labels, 0 = background."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from petct.errors import InputError
from petct.imageio import Geometry, read_array

# The platform accepts these pixel types for a segmentation output; others are read but flagged.
PLATFORM_MASK_TYPES = (np.uint8, np.int8)
MAX_VALUES_LISTED = 10


@dataclass
class Mask:
    """A mask as uint8 0/1 in (z, y, x) order, its grid, and what was odd about the file."""

    array: np.ndarray
    geometry: Geometry
    warnings: list[str] = field(default_factory=list)


def read_mask(path: Path, *, what: str, study: str | None = None, float_labels: bool = False) -> Mask:
    """Read a mask, or raise InputError naming the study, the file and the problem.

    Floating-point masks (probabilities, NaN) are refused. With `float_labels` (for ground truth, which
    is often saved as float), a floating-point file holding whole numbers only is read as labels with a
    warning. Integer labels other than 0/1 are scored as lesion (nonzero) with a warning.
    """
    try:
        array, geometry = read_array(path)
    except InputError as exc:
        raise InputError(f"{what}: {exc.problem}", path=path, study=study) from None
    return mask_from_array(array, geometry, path=path, what=what, study=study, float_labels=float_labels)


def mask_from_array(array: np.ndarray, geometry: Geometry, *, path: str | Path, what: str, study: str | None = None,
                    float_labels: bool = False) -> Mask:
    """A mask already in memory (z, y, x), checked as read_mask checks a file's; `path` names it in errors."""
    warnings = []
    if not (np.issubdtype(array.dtype, np.integer) or (float_labels and _whole_numbers(array))):
        raise InputError(f"{what}: {_not_integer(array)}; a mask must hold integer labels 0 and 1",
                         path=path, study=study)
    if array.dtype not in PLATFORM_MASK_TYPES:
        warnings.append(f"{what} has pixel type {array.dtype}; the platform expects uint8 or int8")
    low, high = int(array.min()), int(array.max())
    if low < 0 or high > 1:
        warnings.append(f"{what} holds labels other than 0 and 1 ({_odd_labels(array)}); "
                        "every nonzero voxel was scored as lesion")
    binary = array if array.dtype == np.uint8 and high <= 1 else (array != 0).view(np.uint8)
    return Mask(array=binary, geometry=geometry, warnings=warnings)


def _whole_numbers(array: np.ndarray) -> bool:
    """Whether a floating-point array holds only finite whole numbers."""
    if not np.issubdtype(array.dtype, np.floating):
        return False
    return bool(np.isfinite(array).all() and (np.mod(array, 1) == 0).all())


def _not_integer(array: np.ndarray) -> str:
    if np.issubdtype(array.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(array)))
        nonfinite = f", {bad} NaN or infinite voxel(s)" if bad else ""
        return f"holds floating-point values ({array.dtype}{nonfinite})"
    return f"has pixel type {array.dtype}"


def _odd_labels(array: np.ndarray) -> str:
    """The labels other than 0 and 1, listed briefly with how many voxels hold them."""
    odd = array[(array < 0) | (array > 1)]
    values = np.unique(odd)
    listed = ", ".join(str(v) for v in values[:MAX_VALUES_LISTED])
    more = f" and {values.size - MAX_VALUES_LISTED} more" if values.size > MAX_VALUES_LISTED else ""
    return f"values {listed}{more} in {odd.size} voxel(s)"
