"""Checks an uploaded file passes before any work is done with it: a safe, readable, bounded 3D image."""
from __future__ import annotations

import gzip
import re
import zlib
from pathlib import Path

import numpy as np

from app.service.errors import ApiError
from app.service.uploads import StoredFile
from petct.errors import InputError
from petct.imageio import Geometry, read_geometry, read_image

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


def check_upload(stored: StoredFile, *, max_voxels: int, read_voxels: bool = True) -> Geometry:
    """The file's grid, or ApiError(422) naming the field, the client's file name and the problem.

    The header is always read (safe, an image, within the voxel limit). `read_voxels=False` leaves the
    full read to a caller that reads the file next anyway and reports its problems itself (scoring).
    """
    def refuse(reason: str) -> ApiError:
        return ApiError(422, reason, field=stored.field, file=stored.client_name)

    reason = detached_data_reason(stored.path)
    if reason:
        raise refuse(reason)
    try:
        geometry = read_geometry(stored.path)
        voxels = int(np.prod(geometry.size, dtype=np.int64))
        if voxels > max_voxels:
            raise refuse(f"image has {voxels} voxels, over the server's limit of {max_voxels}")
        if read_voxels:
            read_image(stored.path)
    except InputError as exc:
        # exc.problem, not str(exc): the message must not reveal the server's own file path.
        raise refuse(exc.problem) from None
    return geometry
