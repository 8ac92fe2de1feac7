"""A phase submission: one mask per case, as multipart fields named by case or as one .zip/.tar archive.

Archives are read member by member with zipfile/tarfile, never extracted by them: a member's name must
be `<case>.mha` or `<case>.nii.gz` for a case of the phase (no folders, no links, at most one per case,
nothing else), and its bytes are copied under a server-made name while they are counted, so a member
that decompresses past the upload limit stops there whatever its header claims.

A tar member's header can carry fields of any length (a GNU long name or link name, pax records), which
tarfile reads whole into memory: their sizes are checked against `max_header_bytes` before a byte of them is
read, and sparse members (whose few stored bytes stand for gigabytes of zeros) are refused outright.
"""
from __future__ import annotations

import contextlib
import gzip
import secrets
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

from app.service.errors import ApiError
from app.service.uploads import StoredFile

MEMBER_SUFFIXES = (".mha", ".nii.gz")
COPY_CHUNK = 1 << 20
# Names of at most a few hundred characters are all a member needs (<case>.mha); pax records such as mtime
# or uname fit many times over.
DEFAULT_MAX_HEADER_BYTES = 4096
_HEADER_TYPES = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE,
                 tarfile.SOLARIS_XHDTYPE)


def _sparse_refusal() -> ApiError:
    return ApiError(422, "archive member is sparse (its stored bytes stand for more); send plain members",
                    field="archive")


class _BoundedTarInfo(tarfile.TarInfo):
    """tarfile's member header, refusing long header fields before they are read and any sparse member."""

    max_header_bytes = DEFAULT_MAX_HEADER_BYTES

    def _proc_member(self, tarfile_):  # tarfile's documented hook for subclasses
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise _sparse_refusal()
        if self.type in _HEADER_TYPES and self.size > self.max_header_bytes:
            raise ApiError(422, f"archive member has a header field (long name, link name or pax record) of "
                                f"{self.size} bytes, over the limit of {self.max_header_bytes}", field="archive")
        return super()._proc_member(tarfile_)

    # pax headers announcing GNU sparse maps (formats 0.0, 0.1, 1.0): refused before the map is read.
    def _proc_gnusparse_00(self, *args):
        raise _sparse_refusal()

    def _proc_gnusparse_01(self, *args):
        raise _sparse_refusal()

    def _proc_gnusparse_10(self, *args):
        raise _sparse_refusal()


def _bounded_tarinfo(max_header_bytes: int) -> type[tarfile.TarInfo]:
    return type("BoundedTarInfo", (_BoundedTarInfo,), {"max_header_bytes": max_header_bytes})


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


def _copy_counted(source: IO[bytes], target: Path, *, limit: int, name: str, over: str) -> int:
    """Copy at most `limit` bytes; ApiError(413) saying `over` as soon as the member holds more."""
    copied = 0
    with open(target, "xb") as out:
        while chunk := source.read(COPY_CHUNK):
            copied += len(chunk)
            if copied > limit:
                raise ApiError(413, f"archive member decompresses past {over}", field="archive", file=name)
            out.write(chunk)
    return copied


def zip_entry_count(path: Path) -> int:
    """The number of entries a .zip declares in its end record, read before its central directory is.

    zipfile reads every entry of the central directory into memory on opening; a small archive can
    declare millions. A count of 0xFFFF sends to the Zip64 end record, which holds the real one.
    """
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        size = fh.tell()
        tail_start = max(0, size - zipfile.sizeEndCentDir - 0xFFFF)  # the record, then a comment of <= 64 KiB
        fh.seek(tail_start)
        tail = fh.read()
        at = _end_record_at(tail)
        count = struct.unpack(zipfile.structEndArchive, tail[at:at + zipfile.sizeEndCentDir])[4]
        locator_at = at - zipfile.sizeEndCentDir64Locator
        if count != 0xFFFF or locator_at < 0 or \
                tail[locator_at:locator_at + 4] != zipfile.stringEndArchive64Locator:
            return count
        _, _, record_offset, _ = struct.unpack(zipfile.structEndArchive64Locator,
                                               tail[locator_at:at])
        fh.seek(record_offset)
        record = fh.read(zipfile.sizeEndCentDir64)
    if len(record) != zipfile.sizeEndCentDir64 or record[:4] != zipfile.stringEndArchive64:
        raise zipfile.BadZipFile("the Zip64 end record is not where its locator says")
    return struct.unpack(zipfile.structEndArchive64, record)[7]  # entries in the central directory, in all


def _end_record_at(tail: bytes) -> int:
    """Where the end record starts in the file's last bytes: the last one whose comment ends the file, else the
    last one (as zipfile reads it)."""
    last, at = None, len(tail)
    while (at := tail.rfind(zipfile.stringEndArchive, 0, at)) >= 0:
        record = struct.unpack(zipfile.structEndArchive, tail[at:at + zipfile.sizeEndCentDir].ljust(
            zipfile.sizeEndCentDir, b"\0"))
        if at + zipfile.sizeEndCentDir + record[7] == len(tail):  # its comment ends the file: the real record
            return at
        last = at if last is None else last
    if last is None or len(tail) - last < zipfile.sizeEndCentDir:
        raise zipfile.BadZipFile("no end of central directory record")
    return last


def unpack_case_archive(archive: StoredFile, *, cases: Sequence[str], folder: Path, max_bytes: int,
                        max_ratio: float, max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES) -> dict[str, StoredFile]:
    """The archive's masks by case, copied into `folder`; ApiError naming the member that breaks a rule.

    All members together may decompress to `max_bytes` and to `max_ratio` times the archive's own size
    (the limits an upload's images have), whichever is less.
    """
    stored: dict[str, StoredFile] = {}
    archive_bytes = archive.path.stat().st_size
    by_ratio = int(archive_bytes * max_ratio)
    budget = min(max_bytes, by_ratio)  # all members together, decompressed
    over = (f"the limit of {max_bytes} bytes" if budget == max_bytes else
            f"{max_ratio:g} times the archive's {archive_bytes} bytes, the server's limit on the ratio")

    def take(name: str, source: IO[bytes]) -> None:
        nonlocal budget
        case, suffix = member_case(name, cases)
        if case in stored:
            raise ApiError(422, f"case {case} is in the archive more than once", field="archive", file=name)
        path = folder / f"case-{secrets.token_hex(8)}{suffix}"
        size = _copy_counted(source, path, limit=budget, name=name, over=over)
        budget -= size
        stored[case] = StoredFile(field=case, client_name=name, path=path, size=size)

    def too_many(count: int | str) -> ApiError:
        return ApiError(422, f"archive holds {count} members; the phase has {len(cases)} cases",
                        field="archive", file=archive.client_name)

    try:
        if archive.path.name.endswith(".zip"):
            declared = zip_entry_count(archive.path)
            if declared > len(cases):
                raise too_many(declared)
            with zipfile.ZipFile(archive.path) as zf:
                members = zf.infolist()
                if len(members) > len(cases):  # the end record and the directory disagree
                    raise too_many(len(members))
                for info in members:
                    if info.flag_bits & 0x1:  # zipfile would ask for a password (RuntimeError)
                        raise ApiError(422, "archive member is encrypted; send it without a password",
                                       field="archive", file=info.filename)
                    mode = info.external_attr >> 16
                    if info.is_dir() or (mode & 0o170000) not in (0, 0o100000):  # S_IFMT: no links, devices
                        raise ApiError(422, "archive member is not a plain file", field="archive",
                                       file=info.filename)
                    member_case(info.filename, cases)
                    with zf.open(info) as source:
                        take(info.filename, source)
        else:
            with tarfile.open(archive.path, mode="r:*", tarinfo=_bounded_tarinfo(max_header_bytes)) as tf:
                count = 0
                for info in tf:  # lazily: a tar of a million members stops at the first one too many
                    count += 1
                    if count > len(cases):
                        raise too_many("more")
                    if info.issparse():
                        raise _sparse_refusal()
                    if not info.isreg():
                        raise ApiError(422, "archive member is not a plain file", field="archive", file=info.name)
                    member_case(info.name, cases)
                    source = tf.extractfile(info)
                    take(info.name, source)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, NotImplementedError, gzip.BadGzipFile,
            UnicodeDecodeError) as exc:  # BadGzipFile: data after the gzip stream; UnicodeDecodeError: a zip's names
        raise ApiError(422, f"not a readable archive: {str(exc)[:200]}", field="archive",
                       file=archive.client_name) from None
    archive.path.unlink(missing_ok=True)
    return stored


class InFlight:
    """How many submissions each participant has being received or scored; more than `limit` at once are refused.

    Counted on the event loop, between awaits, so a check and its increment cannot interleave with another's.
    """

    def __init__(self, limit: int):
        self.limit = limit
        self._counts: dict[str, int] = {}

    @contextlib.contextmanager
    def slot(self, participant: str) -> Iterator[None]:
        if self._counts.get(participant, 0) >= self.limit:
            raise ApiError(429, f"{self.limit} of your submissions are being received or scored already (the "
                                f"server's limit at once); send the next when one has been answered",
                           headers={"Retry-After": "5"})
        self._counts[participant] = self._counts.get(participant, 0) + 1
        try:
            yield
        finally:
            self._counts[participant] -= 1
            if not self._counts[participant]:
                del self._counts[participant]

    def count(self, participant: str) -> int:
        return self._counts.get(participant, 0)


def case_set(files: dict[str, StoredFile], *, cases: Sequence[str], folder: Path, max_bytes: int,
             max_ratio: float) -> dict[str, StoredFile]:
    """One mask per case, from per-case fields or from the archive; ApiError(422) naming what is missing."""
    archive = files.pop("archive", None)
    if archive is not None:
        if files:
            raise ApiError(422, "send either one archive or one field per case, not both", field=next(iter(files)))
        files = unpack_case_archive(archive, cases=cases, folder=folder, max_bytes=max_bytes, max_ratio=max_ratio)
    missing = [case for case in cases if case not in files]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ApiError(422, f"a submission holds one mask for every case of the phase; missing: {shown}",
                       field=missing[0])
    return files

