"""A phase submission: one mask per case, as multipart fields named by case or as one .zip/.tar archive.

Archives are read member by member with zipfile/tarfile, never extracted by them: a member's name must
be `<case>.mha` or `<case>.nii.gz` for a case of the phase (no folders, no links, at most one per case,
nothing else), and its bytes are copied under a server-made name while they are counted, so a member
that decompresses past the upload limit stops there whatever its header claims.
"""
from __future__ import annotations

import secrets
import tarfile
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from app.service.errors import ApiError
from app.service.uploads import StoredFile

MEMBER_SUFFIXES = (".mha", ".nii.gz")
COPY_CHUNK = 1 << 20


def member_case(name: str, cases: Sequence[str]) -> tuple[str, str]:
    """(case, suffix) an archive member's name stands for, or ApiError(422) saying what is wrong with it."""
    if "/" in name or "\\" in name or name in ("", ".", ".."):
        raise ApiError(422, "archive members must be files at the top level, named <case>.mha or <case>.nii.gz",
                       field="archive", file=name)
    for suffix in MEMBER_SUFFIXES:
        if name.endswith(suffix) and name[: -len(suffix)] in cases:
            return name[: -len(suffix)], suffix
    raise ApiError(422, "archive member is not <case>.mha or <case>.nii.gz for a case of this phase",
                   field="archive", file=name)


def _copy_counted(source: IO[bytes], target: Path, *, limit: int, name: str) -> int:
    """Copy at most `limit` bytes; ApiError(413) as soon as the member holds more."""
    copied = 0
    with open(target, "xb") as out:
        while chunk := source.read(COPY_CHUNK):
            copied += len(chunk)
            if copied > limit:
                raise ApiError(413, f"archive member decompresses past the limit of {limit} bytes",
                               field="archive", file=name)
            out.write(chunk)
    return copied


def unpack_case_archive(archive: StoredFile, *, cases: Sequence[str], folder: Path,
                        max_bytes: int) -> dict[str, StoredFile]:
    """The archive's masks by case, copied into `folder`; ApiError naming the member that breaks a rule."""
    stored: dict[str, StoredFile] = {}
    budget = max_bytes  # all members together, decompressed

    def take(name: str, source: IO[bytes]) -> None:
        nonlocal budget
        case, suffix = member_case(name, cases)
        if case in stored:
            raise ApiError(422, f"case {case} is in the archive more than once", field="archive", file=name)
        path = folder / f"case-{secrets.token_hex(8)}{suffix}"
        size = _copy_counted(source, path, limit=budget, name=name)
        budget -= size
        stored[case] = StoredFile(field=case, client_name=name, path=path, size=size)

    try:
        if archive.path.name.endswith(".zip"):
            with zipfile.ZipFile(archive.path) as zf:
                members = zf.infolist()
                if len(members) > len(cases):
                    raise ApiError(422, f"archive holds {len(members)} members; the phase has {len(cases)} cases",
                                   field="archive", file=archive.client_name)
                for info in members:
                    mode = info.external_attr >> 16
                    if info.is_dir() or (mode & 0o170000) not in (0, 0o100000):  # S_IFMT: no links, devices
                        raise ApiError(422, "archive member is not a plain file", field="archive",
                                       file=info.filename)
                    member_case(info.filename, cases)
                    with zf.open(info) as source:
                        take(info.filename, source)
        else:
            with tarfile.open(archive.path, mode="r:*") as tf:
                count = 0
                for info in tf:  # lazily: a tar of a million members stops at the first one too many
                    count += 1
                    if count > len(cases):
                        raise ApiError(422, f"archive holds more members than the phase's {len(cases)} cases",
                                       field="archive", file=archive.client_name)
                    if not info.isreg():
                        raise ApiError(422, "archive member is not a plain file", field="archive", file=info.name)
                    member_case(info.name, cases)
                    source = tf.extractfile(info)
                    take(info.name, source)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, NotImplementedError) as exc:
        raise ApiError(422, f"not a readable archive: {exc}", field="archive", file=archive.client_name) from None
    archive.path.unlink(missing_ok=True)
    return stored


def case_set(files: dict[str, StoredFile], *, cases: Sequence[str], folder: Path,
             max_bytes: int) -> dict[str, StoredFile]:
    """One mask per case, from per-case fields or from the archive; ApiError(422) naming what is missing."""
    archive = files.pop("archive", None)
    if archive is not None:
        if files:
            raise ApiError(422, "send either one archive or one field per case, not both", field=next(iter(files)))
        files = unpack_case_archive(archive, cases=cases, folder=folder, max_bytes=max_bytes)
    missing = [case for case in cases if case not in files]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ApiError(422, f"a submission holds one mask for every case of the phase; missing: {shown}",
                       field=missing[0])
    return files

