"""Reading and writing images with SimpleITK, keeping geometry, with errors that name the file."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from petct.atomic import atomic_path
from petct.errors import InputError

# Grids may differ by floating-point noise from the writer: relative for spacing, mm for origin.
SPACING_RTOL = 1e-4
ORIGIN_ATOL_MM = 1e-3
DIRECTION_ATOL = 1e-4


@dataclass(frozen=True)
class Geometry:
    """Size, spacing, origin and direction of an image, in SimpleITK's (x, y, z) order."""

    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]

    @classmethod
    def of(cls, image: sitk.Image) -> "Geometry":
        return cls(
            size=tuple(image.GetSize()),
            spacing=tuple(image.GetSpacing()),
            origin=tuple(image.GetOrigin()),
            direction=tuple(image.GetDirection()),
        )

    @property
    def voxel_volume_ml(self) -> float:
        return float(np.prod(self.spacing)) / 1000.0

    def apply_to(self, image: sitk.Image) -> sitk.Image:
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    def to_json(self) -> dict:
        return {"size": list(self.size), "spacing": list(self.spacing), "origin": list(self.origin),
                "direction": list(self.direction)}


def grid_mismatches(reference: Geometry, other: Geometry) -> list[str]:
    """What differs between two grids beyond writer noise; empty when they are the same grid."""
    problems = []
    if reference.size != other.size:
        return [f"size {list(other.size)} != {list(reference.size)}"]
    if not np.allclose(other.spacing, reference.spacing, rtol=SPACING_RTOL, atol=0):
        problems.append(f"spacing {_fmt(other.spacing)} != {_fmt(reference.spacing)}")
    if not np.allclose(other.origin, reference.origin, rtol=0, atol=ORIGIN_ATOL_MM):
        problems.append(f"origin {_fmt(other.origin)} != {_fmt(reference.origin)}")
    if not np.allclose(other.direction, reference.direction, rtol=0, atol=DIRECTION_ATOL):
        problems.append(f"direction {_fmt(other.direction)} != {_fmt(reference.direction)}")
    return problems


def _fmt(values) -> str:
    return "[" + ", ".join(f"{v:.6g}" for v in values) + "]"


def read_image(path: str | Path) -> sitk.Image:
    """Read a single-channel 3D image, or raise InputError naming the file and the problem."""
    path = Path(path)
    if not path.exists():
        raise InputError("file does not exist", path=path)
    if not path.is_file():
        raise InputError("not a regular file", path=path)
    if path.stat().st_size == 0:
        raise InputError("file is empty", path=path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        reason = _first_line(str(exc))
        raise InputError(f"not a readable image (truncated or corrupt?): {reason}", path=path) from None
    if image.GetDimension() != 3:
        raise InputError(f"expected a 3D image, got {image.GetDimension()}D", path=path)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"expected one channel, got {image.GetNumberOfComponentsPerPixel()} components per voxel", path=path)
    if 0 in image.GetSize():
        raise InputError(f"image has no voxels (size {list(image.GetSize())})", path=path)
    return image


def _first_line(message: str) -> str:
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    # ITK's messages start with the source location; the description is the last useful line.
    for line in reversed(lines):
        if line.lower().startswith("description:"):
            return line.split(":", 1)[1].strip()
    return lines[-1] if lines else "unknown error"


def read_array(path: str | Path) -> tuple[np.ndarray, Geometry]:
    """Read an image as a (z, y, x) array plus its geometry."""
    image = read_image(path)
    return sitk.GetArrayFromImage(image), Geometry.of(image)


def require_finite(array: np.ndarray, *, path: str | Path, what: str = "image") -> None:
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise InputError(f"{what} holds {bad} NaN or infinite voxel(s)", path=path)


def image_from_array(array: np.ndarray, geometry: Geometry) -> sitk.Image:
    """A SimpleITK image of a (z, y, x) array with the given geometry."""
    if tuple(array.shape[::-1]) != tuple(geometry.size):
        raise ValueError(f"array shape {array.shape} does not match size {geometry.size} (x, y, z)")
    return geometry.apply_to(sitk.GetImageFromArray(array))


def write_image_atomic(image: sitk.Image, path: str | Path, *, compress: bool = True) -> Path:
    """Write an image atomically (see petct.atomic)."""
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=compress)
    return Path(path)
