"""Reading and writing images with SimpleITK, keeping geometry, with errors that name the file."""
from __future__ import annotations

import contextlib
import errno
import functools
import gzip
import math
import re
import shutil
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from petct.atomic import IncompleteWriteError, atomic_path, require_size
from petct.errors import InputError
from petct.layout import image_suffix

FAST_GZIP_LEVEL = 1  # zlib's fastest deflate (write_image_atomic's fast_gzip)

# Grids may differ by floating-point noise from the writer: relative for spacing, mm for origin.
SPACING_RTOL = 1e-4
ORIGIN_ATOL_MM = 1e-3
DIRECTION_ATOL = 1e-4
# Header items SimpleITK keeps from a NIfTI file that MetaImageIO cannot write (each would warn once per write).
NIFTI_HEADER_ITEMS = frozenset({"ITK_FileNotes", "aux_file", "descrip", "intent_name", "qto_xyz", "sto_xyz",
                                "qform_code_name", "sform_code_name"})
# Voxel spacing a PET/CT image can have, in mm; beyond it volumes overflow or vanish and Dice means nothing.
MIN_SPACING_MM = 1e-3
MAX_SPACING_MM = 1e3


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


def _require_sane_spacing(path: Path, spacing) -> None:
    # NaN fails every comparison and infinity the upper bound, so the range test alone refuses both.
    if not all(MIN_SPACING_MM <= abs(v) <= MAX_SPACING_MM for v in spacing):
        raise InputError(f"voxel spacing {_fmt(spacing)} is not finite or outside "
                         f"{MIN_SPACING_MM:g}..{MAX_SPACING_MM:g} mm", path=path)


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
        image = sitk.ReadImage(str(path), imageIO=_image_io(path))
    except RuntimeError as exc:
        reason = _itk_reason(str(exc), path)
        raise InputError(f"not a readable image (truncated or corrupt?): {reason}", path=path) from None
    _require_single_channel_3d(path=path, dimension=image.GetDimension(),
                               components=image.GetNumberOfComponentsPerPixel(), size=image.GetSize())
    _require_sane_spacing(path, image.GetSpacing())
    return image


@dataclass(frozen=True)
class ImageHeader:
    """What an image's header says, before any voxel is read: its grid and the bytes one voxel takes in memory."""

    geometry: Geometry
    bytes_per_voxel: int

    @property
    def decoded_bytes(self) -> int:
        """Memory the voxels take once read."""
        return int(np.prod(self.geometry.size, dtype=np.int64)) * self.bytes_per_voxel


def read_header(path: str | Path) -> ImageHeader:
    """The header of a single-channel 3D image (no voxels read), with read_image's checks, or InputError."""
    path = Path(path)
    _require_nonempty_file(path)
    _require_sane_nifti_pixdim(path)
    reader = _reader(path)
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        reason = _itk_reason(str(exc), path)
        raise InputError(f"not a readable image (truncated or corrupt?): {reason}", path=path) from None
    _require_single_channel_3d(path=path, dimension=reader.GetDimension(),
                               components=reader.GetNumberOfComponents(), size=reader.GetSize())
    _require_sane_spacing(path, reader.GetSpacing())
    return ImageHeader(geometry=Geometry.of(reader), bytes_per_voxel=_bytes_per_voxel(reader.GetPixelID()))


def read_geometry(path: str | Path) -> Geometry:
    """The grid of a single-channel 3D image from its header alone (no voxels read), or InputError.

    Cheap enough to check a file's grid, or its size against a limit, before reading a possibly huge image.
    """
    return read_header(path).geometry


@functools.lru_cache(maxsize=None)
def _bytes_per_voxel(pixel_id: int) -> int:
    return sitk.Image([1, 1, 1], pixel_id).GetSizeOfPixelComponent()


# ITK picks a reader by the file name's suffix, case-sensitively for some formats ('S.MHA' fails); the
# kit matches suffixes in any case, so the reader is named whenever the suffix is not already lower-case.
_IMAGE_IO = {".mha": "MetaImageIO", ".mhd": "MetaImageIO", ".nii": "NiftiImageIO", ".nii.gz": "NiftiImageIO",
             ".nrrd": "NrrdImageIO", ".tif": "TIFFImageIO", ".tiff": "TIFFImageIO"}


def _image_io(path: Path) -> str:
    """The ITK reader to name for `path`, or "" to let ITK choose by the (lower-case) suffix."""
    name = path.name
    if name.islower() or name.endswith((".mha", ".nii.gz", ".nii", ".nrrd")):
        return ""
    suffix = image_suffix(name)
    return _IMAGE_IO[suffix] if suffix is not None and not name.endswith(suffix) else ""


def _reader(path: Path) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.SetImageIO(_image_io(path))
    return reader


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


def write_image_atomic(image: sitk.Image, path: str | Path, *, compress: bool = True, fast_gzip: bool = False) -> Path:
    """Write an image atomically (see petct.atomic), refusing a file that holds less than its header announces.

    `fast_gzip` (.nii.gz only): ITK's own .nii.gz writer deflates ~4x slower than zlib at level 1 for files barely
    (~10 %) smaller; bulk conversion, whose time is mostly compression, writes the NIfTI plain and gzips it at
    FAST_GZIP_LEVEL instead.
    """
    with atomic_path(path, verify=lambda tmp: require_image_written(tmp, image, path=path)) as tmp:
        try:
            with _quiet_metaimage_items(image, path):
                if fast_gzip and tmp.name.lower().endswith(".nii.gz"):
                    _write_nifti_fast_gzip(image, tmp)
                else:
                    sitk.WriteImage(image, str(tmp), useCompression=compress)
        except RuntimeError as exc:
            if out_of_space(exc, folder=tmp.parent, needed=image_bytes(image)):
                raise OSError(errno.ENOSPC, "No space left on device (writing the image)") from None
            raise
    return Path(path)


@contextlib.contextmanager
def _quiet_metaimage_items(image: sitk.Image, path: str | Path):
    """No ITK warning per NIfTI header item (qto_xyz, descrip, ...) a MetaImage cannot hold, for an image read
    from NIfTI and written as .mha: the items are dropped either way, and the geometry is written in full.

    ITK's warning switch is process-wide; it is off only while such an image is written.
    """
    unwritable = str(path).lower().endswith((".mha", ".mhd")) and any(
        key in NIFTI_HEADER_ITEMS for key in image.GetMetaDataKeys())
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    if unwritable and shown:
        sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        if unwritable and shown:
            sitk.ProcessObject.SetGlobalWarningDisplay(True)


def _write_nifti_fast_gzip(image: sitk.Image, target: Path) -> None:
    plain = target.with_name(target.name[: -len(".gz")])
    try:
        sitk.WriteImage(image, str(plain), useCompression=False)
        with open(plain, "rb") as source, gzip.open(target, "wb", compresslevel=FAST_GZIP_LEVEL) as sink:
            shutil.copyfileobj(source, sink, 1 << 22)
    finally:
        plain.unlink(missing_ok=True)


def image_bytes(image: sitk.Image) -> int:
    """What an image's voxels take uncompressed."""
    return image.GetNumberOfPixels() * image.GetNumberOfComponentsPerPixel() * image.GetSizeOfPixelComponent()


def out_of_space(exc: BaseException, *, folder: Path, needed: int) -> bool:
    """Whether ITK's write error (a RuntimeError with its own text) is the disk running out of space.

    ITK's message names the file and, depending on the writer, the system's reason or none; when it gives none,
    less free space than the image's uncompressed size says it all the same.
    """
    text = str(exc)
    if "No space left on device" in text or "Disk quota exceeded" in text:
        return True
    try:
        return shutil.disk_usage(folder).free < needed
    except OSError:
        return False


def require_image_written(tmp: Path, image: sitk.Image, *, path: str | Path) -> None:
    """IncompleteWriteError unless `tmp` reads back with `image`'s size and holds every byte its header announces.

    ITK does not report a failed final flush, so a full disk can leave a short or empty file behind.
    """
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(tmp))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise IncompleteWriteError("the header does not read back", path=path) from None
    if tuple(reader.GetSize()) != tuple(image.GetSize()):
        raise IncompleteWriteError(f"size {list(reader.GetSize())} reads back, {list(image.GetSize())} written",
                                   path=path)
    expected = _announced_bytes(tmp, image)
    if expected is None:
        return  # a format whose length the header does not tell; the header read back above
    if tmp.name.lower().endswith(".gz"):
        # gzip's last 4 bytes hold the decompressed length mod 2**32: a cut-off stream ends in other bytes.
        with open(tmp, "rb") as fh:
            fh.seek(-4, 2)
            announced = struct.unpack("<I", fh.read(4))[0]
        if announced != expected % 2**32:
            raise IncompleteWriteError("the gzip stream is cut off", path=path)
        return
    require_size(tmp, expected, path=path)


def _announced_bytes(tmp: Path, image: sitk.Image) -> int | None:
    """The file's length (decompressed length for .gz) per its own header, for .mha, .nii and .nii.gz."""
    name = tmp.name.lower()
    if _is_nifti(tmp):
        with _open_nifti(tmp) as fh:
            fields = _parse_nifti_header(fh.read(540))
        return None if fields is None else fields.expected_bytes
    if name.endswith(".mha"):
        with open(tmp, "rb") as fh:
            head = fh.read(1 << 16)
        end = re.search(rb"^ElementDataFile\s*=\s*LOCAL\r?\n", head, re.MULTILINE)
        if end is None:
            return None
        compressed = re.search(rb"^CompressedDataSize\s*=\s*(\d+)", head[:end.start()], re.MULTILINE)
        if re.search(rb"^CompressedData\s*=\s*True", head[:end.start()], re.MULTILINE):
            return end.end() + int(compressed.group(1)) if compressed else None
        return end.end() + int(np.prod(image.GetSize(), dtype=np.int64)) * image.GetNumberOfComponentsPerPixel() \
            * image.GetSizeOfPixelComponent()
    return None


# ITK's NIfTI reader fills a truncated .nii or .nii.gz with zeros without a word, and reads a NaN pixdim as
# spacing 1; these checks catch both from the header.
_NIFTI_HEADER_BYTES = {348: 1, 540: 2}


@dataclass(frozen=True)
class _NiftiHeader:
    expected_bytes: int  # voxel offset plus voxel bytes
    spacing: tuple[float, ...]  # pixdim[1..ndim], at most three


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith((".nii", ".nii.gz"))


def require_complete_nifti(path: str | Path) -> None:
    """Raise InputError if a .nii/.nii.gz file holds fewer or more bytes than its header announces.

    Reading stops one byte past the announced size, so a small file padded with gigabytes of compressed
    trailing data costs no more than a healthy one. Other formats are left to their readers (ITK reports
    truncated .mha and .nrrd files itself).
    """
    path = Path(path)
    if not _is_nifti(path):
        return
    try:
        with _open_nifti(path) as fh:
            header = fh.read(540)
            fields = _parse_nifti_header(header)
            if fields is None:
                return  # not NIfTI: ITK's reader says so
            _require_sane_spacing(path, fields.spacing)
            if path.name.lower().endswith(".gz"):
                total = len(header) + _count_bytes(fh, limit=max(fields.expected_bytes + 1 - len(header), 0))
            else:
                total = path.stat().st_size
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"not a readable image (truncated or corrupt?): {exc}", path=path) from None
    if total < fields.expected_bytes:
        raise InputError(f"truncated NIfTI file: {total} bytes, header announces {fields.expected_bytes}", path=path)
    if total > fields.expected_bytes:
        raise InputError(f"NIfTI file has data after the {fields.expected_bytes} bytes its header announces",
                         path=path)


def _require_sane_nifti_pixdim(path: Path) -> None:
    """InputError if a NIfTI header's voxel spacing is NaN, infinite or absurd (ITK would read NaN as 1)."""
    if not _is_nifti(path):
        return
    try:
        with _open_nifti(path) as fh:
            fields = _parse_nifti_header(fh.read(540))
    except (OSError, EOFError, zlib.error):
        return  # the reader reports it
    if fields is not None:
        _require_sane_spacing(path, fields.spacing)


def _open_nifti(path: Path):
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def _count_bytes(fh, *, limit: int) -> int:
    """Bytes read from `fh`, stopping at `limit`."""
    total = 0
    while total < limit and (chunk := fh.read(min(1 << 22, limit - total))):
        total += len(chunk)
    return total


def _parse_nifti_header(header: bytes) -> _NiftiHeader | None:
    """Announced size and spacing per the NIfTI-1/2 header; None if it is not one (ITK then complains)."""
    for order in ("<", ">"):
        if len(header) < 4:
            return None
        version = _NIFTI_HEADER_BYTES.get(struct.unpack(order + "i", header[:4])[0])
        if version == 1 and len(header) >= 348:
            dims = struct.unpack(order + "8h", header[40:56])
            bitpix = struct.unpack(order + "h", header[72:74])[0]
            pixdim = struct.unpack(order + "8f", header[76:108])
            offset = struct.unpack(order + "f", header[108:112])[0]
            if not math.isfinite(offset):
                return None
            offset = int(offset)
        elif version == 2 and len(header) >= 540:
            bitpix = struct.unpack(order + "h", header[14:16])[0]
            dims = struct.unpack(order + "8q", header[16:80])
            pixdim = struct.unpack(order + "8d", header[104:168])
            offset = struct.unpack(order + "q", header[168:176])[0]
        else:
            continue
        ndim = dims[0]
        if not 1 <= ndim <= 7 or bitpix <= 0:
            return None
        voxels = int(np.prod([max(int(d), 1) for d in dims[1:ndim + 1]], dtype=np.int64))
        return _NiftiHeader(expected_bytes=max(offset, 348 if version == 1 else 540) + voxels * bitpix // 8,
                            spacing=tuple(pixdim[1:min(ndim, 3) + 1]))
    return None
