"""Checks an uploaded file passes before any work is done with it: a safe, readable, bounded 3D image."""
from __future__ import annotations

import contextlib
import gzip
import re
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from app.service.errors import ApiError
from app.service.settings import UploadLimits
from app.service.uploads import StoredFile
from petct.errors import InputError
from petct.imageio import Geometry, ImageHeader, read_header, read_image
from petct.sizes import format_size

HEADER_BYTES = 65536
# MetaIO ends its header at the first ElementDataFile key (any whitespace around it; "=" or ":" before
# the value) and reads the voxels from the file that names, unless it is LOCAL (this file). Keys come
# in any order and a decoy may sit in a comment, so every occurrence of the word must read "= LOCAL".
_METAIO_DATA_FILE = re.compile(rb"ElementDataFile", re.IGNORECASE)
_METAIO_LOCAL = re.compile(rb"\s*[=:][ \t]*LOCAL[ \t]*\r?\n")
_NRRD_DATA_FILE = re.compile(rb"^\s*data\s?file\s*:", re.IGNORECASE | re.MULTILINE)
_NRRD_HEADER_END = re.compile(rb"\r?\n\r?\n")


def _head(path: Path) -> bytes:
    with open(path, "rb") as fh:
        head = fh.read(HEADER_BYTES)
    if head.startswith(b"\x1f\x8b"):
        try:
            with gzip.open(path, "rb") as fh:
                return fh.read(HEADER_BYTES)
        except (OSError, EOFError, zlib.error):
            return head  # not valid gzip: the reader below reports it
    return head


def detached_data_reason(path: Path) -> str | None:
    """Why the header would make the reader open another file (MetaImage/NRRD can), or None.

    A header like `ElementDataFile = /etc/shadow` would otherwise read any file the server can read
    (organiser mode's ground truth included) and echo its values back in the metrics.
    """
    head = _head(path)
    if head.startswith(b"NRRD"):
        end = _NRRD_HEADER_END.search(head)
        if end is None:
            return f"NRRD header is longer than {HEADER_BYTES} bytes or has no end"
        if _NRRD_DATA_FILE.search(head[:end.start()]):
            return "NRRD header points at a separate data file; send the data inside the file"
    keys = list(_METAIO_DATA_FILE.finditer(head))
    if any(not _METAIO_LOCAL.match(head, key.end()) for key in keys):
        return "MetaImage header points at a separate data file (ElementDataFile is not LOCAL); send one .mha"
    if not keys and path.name.lower().endswith(".mha"):
        return f"MetaImage header has no ElementDataFile = LOCAL line in its first {HEADER_BYTES} bytes"
    return None


def check_upload(stored: StoredFile, *, limits: UploadLimits, read_voxels: bool = True) -> ImageHeader:
    """The file's header, or ApiError(422) naming the field, the client's file name and the problem.

    The header is always read (safe, an image, within the per-file limits). `read_voxels=False` leaves the
    full read to a caller that reads the file next anyway and reports its problems itself (scoring).
    """
    if stored.path.stat().st_size == 0:
        raise _refusal(stored, "file is empty")
    reason = detached_data_reason(stored.path)
    if reason:
        raise _refusal(stored, reason)
    with refusing(stored):
        header = read_header(stored.path)
    reason = _over_limits(header, stored_bytes=stored.path.stat().st_size, limits=limits)
    if reason:
        raise _refusal(stored, reason)
    if read_voxels:
        with refusing(stored):
            read_image(stored.path)
    return header


def check_uploads(files: Mapping[str, StoredFile], *, limits: UploadLimits,
                  read_voxels: bool = True) -> dict[str, Geometry]:
    """Each file's grid once every header is within the limits, the request's decoded total included.

    All headers are checked before any file's voxels are read, so a request over the total costs no decoding.
    """
    headers = checked_headers(files, limits=limits)
    if read_voxels:
        for stored in files.values():
            with refusing(stored):
                read_image(stored.path)
    return {field: header.geometry for field, header in headers.items()}


def checked_headers(files: Mapping[str, StoredFile], *, limits: UploadLimits) -> dict[str, ImageHeader]:
    """Each file's header within the per-file limits, and their decoded total within the request's."""
    headers = {field: check_upload(stored, limits=limits, read_voxels=False) for field, stored in files.items()}
    total = sum(header.decoded_bytes for header in headers.values())
    if total > limits.max_request_image_bytes:
        raise ApiError(422, f"the images of this request decode to {format_size(total)}, over the server's limit "
                            f"of {format_size(limits.max_request_image_bytes)} per request")
    return headers


def read_uploads(files: Mapping[str, StoredFile], *,
                 headers: Mapping[str, ImageHeader]) -> dict[str, sitk.Image]:
    """Each file decoded once, after checked_headers has passed every header (`headers`): the images, by field.

    The largest image (by its header: a full-size CT is 400 MiB as int16) is decoded first, while no other is
    held: a compressed file's reader holds its compressed bytes beside the voxels it inflates them into.
    """
    images = {}
    for field in sorted(files, key=lambda name: headers[name].decoded_bytes, reverse=True):
        with refusing(files[field]):
            images[field] = read_image(files[field].path)
    return {field: images[field] for field in files}


def _refusal(stored: StoredFile, reason: str) -> ApiError:
    return ApiError(422, reason, field=stored.field, file=stored.client_name)


@contextlib.contextmanager
def refusing(stored: StoredFile) -> Iterator[None]:
    """InputError -> ApiError(422) with exc.problem, not str(exc): messages must not reveal the server's paths."""
    try:
        yield
    except InputError as exc:
        raise _refusal(stored, exc.problem) from None


def _over_limits(header: ImageHeader, *, stored_bytes: int, limits: UploadLimits) -> str | None:
    voxels = int(np.prod(header.geometry.size, dtype=np.int64))
    if voxels > limits.max_voxels:
        return f"image has {voxels} voxels, over the server's limit of {limits.max_voxels}"
    if header.decoded_bytes > limits.max_image_bytes:
        return (f"image decodes to {format_size(header.decoded_bytes)} ({voxels} voxels x {header.bytes_per_voxel} "
                f"bytes), over the server's limit of {format_size(limits.max_image_bytes)} per image")
    ratio = header.decoded_bytes / stored_bytes
    if ratio > limits.max_ratio:
        return (f"image decodes to {ratio:.0f} times its {stored_bytes} bytes, over the server's limit of "
                f"{limits.max_ratio:g} (the header announces more data than the file can hold)")
    return None
