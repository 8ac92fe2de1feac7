"""Reading and writing images with SimpleITK, keeping geometry, with errors that name the file."""
from __future__ import annotations

import gzip
import struct
import zlib
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
    def of(cls, image: sitk.Image | sitk.ImageFileReader) -> "Geometry":
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


def _require_nonempty_file(path: Path) -> None:
    if not path.exists():
        raise InputError("file does not exist", path=path)
    if not path.is_file():
        raise InputError("not a regular file", path=path)
    if path.stat().st_size == 0:
        raise InputError("file is empty", path=path)


def _require_single_channel_3d(*, path: Path, dimension: int, components: int, size) -> None:
    if dimension != 3:
        raise InputError(f"expected a 3D image, got {dimension}D", path=path)
    if components != 1:
        raise InputError(f"expected one channel, got {components} components per voxel", path=path)
    if 0 in size:
        raise InputError(f"image has no voxels (size {list(size)})", path=path)


def read_image(path: str | Path) -> sitk.Image:
    """Read a single-channel 3D image, or raise InputError naming the file and the problem."""
    path = Path(path)
    _require_nonempty_file(path)
    require_complete_nifti(path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        reason = _itk_reason(str(exc), path)
        raise InputError(f"not a readable image (truncated or corrupt?): {reason}", path=path) from None
    _require_single_channel_3d(path=path, dimension=image.GetDimension(),
                               components=image.GetNumberOfComponentsPerPixel(), size=image.GetSize())
    return image


def read_geometry(path: str | Path) -> Geometry:
    """The grid of a single-channel 3D image from its header alone (no voxels read), or InputError.

    Cheap enough to check a file's grid, or its size against a limit, before reading a possibly huge image.
    """
    path = Path(path)
    _require_nonempty_file(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        reason = _itk_reason(str(exc), path)
        raise InputError(f"not a readable image (truncated or corrupt?): {reason}", path=path) from None
    _require_single_channel_3d(path=path, dimension=reader.GetDimension(),
                               components=reader.GetNumberOfComponents(), size=reader.GetSize())
    return Geometry.of(reader)


def _itk_reason(message: str, path: Path) -> str:
    """The informative part of an ITK/SimpleITK exception, without the file's path (callers name it) or errno noise."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    text = lines[-1] if lines else "unknown error"
    for line in lines:
        if "ITK ERROR" in line:
            text = line.split("): ", 1)[-1]
            break
        if "sitk::ERROR:" in line:
            text = line.split("sitk::ERROR:", 1)[1]
            break
    # ITK appends the last errno ("No such file or directory") on a separate line; it misleads, so it is dropped.
    for form in (f'"{path}"', str(path)):
        text = text.replace(form, "")
    text = " ".join(text.replace(" for reading", "").split()).strip(" .:")
    return text.removesuffix(" for")  # "Unable to determine ImageIO reader for <path>"


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


# ITK's NIfTI reader fills a truncated .nii or .nii.gz with zeros without a word; these checks catch it.
_NIFTI_HEADER_BYTES = {348: 1, 540: 2}


def require_complete_nifti(path: str | Path) -> None:
    """Raise InputError if a .nii/.nii.gz file holds fewer voxel bytes than its header announces.

    Other formats are left to their readers (ITK reports truncated .mha and .nrrd files itself).
    """
    path = Path(path)
    name = path.name.lower()
    if not name.endswith((".nii", ".nii.gz")):
        return
    try:
        if name.endswith(".gz"):
            with gzip.open(path, "rb") as fh:
                header = fh.read(540)
                total = len(header)
                while chunk := fh.read(1 << 22):
                    total += len(chunk)
        else:
            with open(path, "rb") as fh:
                header = fh.read(540)
            total = path.stat().st_size
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"not a readable image (truncated or corrupt?): {exc}", path=path) from None
    expected = _nifti_expected_bytes(header)
    if expected is not None and total < expected:
        raise InputError(f"truncated NIfTI file: {total} bytes, header announces {expected}", path=path)


def _nifti_expected_bytes(header: bytes) -> int | None:
    """Voxel offset plus voxel bytes per the NIfTI-1/2 header; None if it is not one (ITK then complains)."""
    for order in ("<", ">"):
        if len(header) < 4:
            return None
        version = _NIFTI_HEADER_BYTES.get(struct.unpack(order + "i", header[:4])[0])
        if version == 1 and len(header) >= 348:
            dims = struct.unpack(order + "8h", header[40:56])
            bitpix = struct.unpack(order + "h", header[72:74])[0]
            offset = int(struct.unpack(order + "f", header[108:112])[0])
        elif version == 2 and len(header) >= 540:
            bitpix = struct.unpack(order + "h", header[14:16])[0]
            dims = struct.unpack(order + "8q", header[16:80])
            offset = struct.unpack(order + "q", header[168:176])[0]
        else:
            continue
        ndim = dims[0]
        if not 1 <= ndim <= 7 or bitpix <= 0:
            return None
        voxels = int(np.prod([max(int(d), 1) for d in dims[1:ndim + 1]], dtype=np.int64))
        return max(offset, 348 if version == 1 else 540) + voxels * bitpix // 8
    return None
