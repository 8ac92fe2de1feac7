"""Checks an uploaded file passes before any work is done with it: a safe, readable, bounded 3D image."""
from __future__ import annotations

import gzip
import re
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from app.service.errors import ApiError
from app.service.uploads import StoredFile
from petct.errors import InputError
from petct.imageio import Geometry, read_image

HEADER_BYTES = 65536
_METAIO_DATA_FILE = re.compile(rb"^\s*ElementDataFile\s*=\s*(.*?)\s*$", re.IGNORECASE | re.MULTILINE)
_NRRD_DATA_FILE = re.compile(rb"^\s*data\s?file\s*:", re.IGNORECASE | re.MULTILINE)


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

    A header like `ElementDataFile = /etc/shadow` would otherwise read any file the server can read.
    """
    head = _head(path)
    if head.startswith(b"NRRD"):
        header = head.split(b"\n\n", 1)[0]
        if _NRRD_DATA_FILE.search(header):
            return "NRRD header points at a separate data file; send the data inside the file"
        return None
    match = _METAIO_DATA_FILE.search(head)
    if re.match(rb"^\s*(ObjectType|NDims|ObjectSubType|Comment)\s*=", head):
        if match is None:
            return "MetaImage header has no ElementDataFile line"
        if match.group(1) != b"LOCAL":
            return "MetaImage header points at a separate data file (ElementDataFile is not LOCAL); send one .mha"
    return None


def check_upload(stored: StoredFile, *, max_voxels: int) -> Geometry:
    """The file's grid, or ApiError(422) naming the field, the client's file name and the problem."""
    def refuse(reason: str) -> ApiError:
        return ApiError(422, reason, field=stored.field, file=stored.client_name)

    reason = detached_data_reason(stored.path)
    if reason:
        raise refuse(reason)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(stored.path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise refuse("not an image SimpleITK can read (truncated, corrupt or another format?)") from None
    voxels = int(np.prod(reader.GetSize(), dtype=np.int64))
    if voxels > max_voxels:
        raise refuse(f"image has {voxels} voxels, over the server's limit of {max_voxels}")
    try:
        image = read_image(stored.path)
    except InputError as exc:
        # exc.problem, not str(exc): the message must not reveal the server's own file path.
        raise refuse(exc.problem) from None
    return Geometry.of(image)
