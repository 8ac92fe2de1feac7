"""Hostile submission archives read in bounded memory and disk: long header fields, sparse members, bombs, counts."""
from __future__ import annotations

import gzip
import io
import tarfile
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

from app.service.errors import MAX_ECHOED_NAME, ApiError, echo_name
from app.service.submissions import unpack_case_archive, zip_entry_count
from app.service.uploads import StoredFile
from app_helpers import write_mask

CASES = ("CASE_A", "CASE_B")
HEADER_LIMIT = 4096
NAME_BYTES = 4 << 20  # scaled down from the 256 MB name: well over the limit, small enough for a test
PEAK_LIMIT = 1 << 20  # Python memory the reader may take for a 4 MiB name: under the name's own size


def _stored(path: Path) -> StoredFile:
    return StoredFile(field="archive", client_name=path.name, path=path, size=path.stat().st_size)


def _tar(path: Path, infos: list[tuple[tarfile.TarInfo, bytes | None]], *, format=tarfile.GNU_FORMAT) -> Path:
    with tarfile.open(path, "w:gz", format=format) as tf:
        for info, data in infos:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _member(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _unpack_measured(archive: Path, folder: Path, **limits) -> tuple[ApiError, int]:
    """The refusal and the peak of Python memory while the archive was read."""
    tracemalloc.start()
    try:
        with pytest.raises(ApiError) as caught:
            unpack_case_archive(_stored(archive), cases=CASES, folder=folder, **limits)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return caught.value, peak


LIMITS = dict(max_bytes=64 << 20, max_ratio=1100.0, max_header_bytes=HEADER_LIMIT)


@pytest.fixture
def good(tmp_path) -> bytes:
    return write_mask(np.zeros((4, 4, 4), np.uint8), tmp_path / "good.mha").read_bytes()


def test_a_healthy_tar_with_pax_records_and_a_long_but_allowed_name_is_read(tmp_path, good):
    folder = tmp_path / "out"
    folder.mkdir()
    first = _member("CASE_A.mha", good)
    first[0].pax_headers = {"comment": "x" * 1000}
    archive = _tar(tmp_path / "ok.tar.gz", [first, _member("CASE_B.mha", good)], format=tarfile.PAX_FORMAT)
    stored = unpack_case_archive(_stored(archive), cases=CASES, folder=folder, **LIMITS)
    assert sorted(stored) == list(CASES)
    assert stored["CASE_A"].path.read_bytes() == good


@pytest.mark.parametrize("field", ["gnu long name", "pax path", "gnu long link", "pax linkpath", "pax global"])
def test_a_huge_header_field_is_refused_before_it_is_read(tmp_path, good, field):
    huge = "n" * NAME_BYTES
    if field == "gnu long name":
        infos, fmt = [_member(huge + ".mha", good)], tarfile.GNU_FORMAT
    elif field == "pax path":
        infos, fmt = [_member(huge + ".mha", good)], tarfile.PAX_FORMAT
    elif field in ("gnu long link", "pax linkpath"):
        link = tarfile.TarInfo("CASE_A.mha")
        link.type, link.linkname = tarfile.SYMTYPE, huge
        infos, fmt = [(link, None)], tarfile.GNU_FORMAT if field == "gnu long link" else tarfile.PAX_FORMAT
    else:
        infos, fmt = [_member("CASE_A.mha", good)], tarfile.PAX_FORMAT
    archive = tmp_path / "attack.tar.gz"
    with tarfile.open(archive, "w:gz", format=fmt,
                      pax_headers={"comment": huge} if field == "pax global" else None) as tf:
        for info, data in infos:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    assert archive.stat().st_size < NAME_BYTES // 100  # compresses like the 1.2 MB upload with a 256 MB name
    (tmp_path / "out").mkdir()
    error, peak = _unpack_measured(archive, tmp_path / "out", **LIMITS)
    assert error.status == 422
    assert f"over the limit of {HEADER_LIMIT}" in error.reason
    assert peak < PEAK_LIMIT, f"reading the header took {peak} bytes"
    assert len(str(error.body())) < 1000


def test_the_header_limit_is_a_parameter(tmp_path, good):
    archive = _tar(tmp_path / "a.tar.gz", [_member("x" * 300 + ".mha", good)])  # a GNU long name of 305 bytes
    (tmp_path / "out").mkdir()
    with pytest.raises(ApiError, match="over the limit of 200"):
        unpack_case_archive(_stored(archive), cases=CASES, folder=tmp_path / "out",
                            **{**LIMITS, "max_header_bytes": 200})
    with pytest.raises(ApiError, match="is not <case>.mha"):  # under the limit: read, then refused by name
        unpack_case_archive(_stored(archive), cases=CASES, folder=tmp_path / "out", **LIMITS)


def test_echoed_names_are_cut_before_they_are_cleaned():
    name = "\x00" + "a" * NAME_BYTES
    tracemalloc.start()
    try:
        echoed = echo_name(name)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert echoed == "\ufffd" + "a" * (MAX_ECHOED_NAME - 1)
    assert peak < 64 * 1024, f"echoing a {NAME_BYTES}-character name took {peak} bytes"
    assert ApiError(422, "x", file=name).body()["error"]["file"] == echoed


def _gnu_sparse_member(name: str, *, real_size: int) -> bytes:
    """An old-style GNU sparse header ('S'): no stored data, `real_size` bytes of zeros when extracted."""
    info = tarfile.TarInfo(name)
    info.type = tarfile.GNUTYPE_SPARSE
    header = bytearray(info.tobuf(format=tarfile.GNU_FORMAT))
    header[483:495] = tarfile.itn(real_size, 12, tarfile.GNU_FORMAT)  # the member's real size
    header[148:156] = b"        "
    header[148:156] = b"%06o\0 " % tarfile.calc_chksums(bytes(header))[0]
    return bytes(header)


@pytest.mark.parametrize("kind", ["gnu", "pax 1.0", "pax 0.1"])
def test_sparse_members_are_refused_before_anything_is_written(tmp_path, kind):
    archive = tmp_path / "sparse.tar.gz"
    real_size = 64 << 20  # scaled down from 4 GiB: over the 16 MiB limit below, which an 85-byte file must not reach
    if kind == "gnu":
        archive.write_bytes(gzip.compress(_gnu_sparse_member("CASE_A.mha", real_size=real_size) + bytes(1024)))
    else:
        info = tarfile.TarInfo("GNUSparseFile.0/CASE_A.mha")
        if kind == "pax 1.0":
            info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": "CASE_A.mha",
                                "GNU.sparse.realsize": str(real_size)}
            data = b"1\n" + str(real_size - 1).encode() + b"\n1\n"
            data += bytes(-len(data) % 512) + b"\0"
        else:
            info.pax_headers = {"GNU.sparse.numblocks": "1", "GNU.sparse.offset": str(real_size - 1),
                                "GNU.sparse.numbytes": "1", "GNU.sparse.name": "CASE_A.mha",
                                "GNU.sparse.size": str(real_size), "GNU.sparse.map": f"{real_size - 1},1"}
            data = b"\0"
        info.size = len(data)
        _tar(archive, [(info, data)], format=tarfile.PAX_FORMAT)
    assert archive.stat().st_size < 1024
    folder = tmp_path / "out"
    folder.mkdir()
    with pytest.raises(ApiError) as caught:
        unpack_case_archive(_stored(archive), cases=CASES, folder=folder,
                            max_bytes=16 << 20, max_ratio=1e9, max_header_bytes=HEADER_LIMIT)
    assert caught.value.status == 422 and "sparse" in caught.value.reason
    assert sum(f.stat().st_size for f in folder.iterdir()) == 0


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_members_may_decompress_to_at_most_the_ratio_limit_times_the_archive(tmp_path, kind):
    zeros = bytes(4 << 20)
    archive = tmp_path / f"bomb.{'zip' if kind == 'zip' else 'tar.gz'}"
    if kind == "zip":
        with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
            zf.writestr("CASE_A.mha", zeros)
    else:
        _tar(archive, [_member("CASE_A.mha", zeros)])
    ratio = len(zeros) / archive.stat().st_size
    folder = tmp_path / "out"
    folder.mkdir()
    with pytest.raises(ApiError) as caught:  # within the size limit, over a ratio limit of half what it has
        unpack_case_archive(_stored(archive), cases=CASES, folder=folder, max_bytes=64 << 20, max_ratio=ratio / 2,
                            max_header_bytes=HEADER_LIMIT)
    assert caught.value.status == 413 and "the server's limit on the ratio" in caught.value.reason
    assert sum(f.stat().st_size for f in folder.iterdir()) <= archive.stat().st_size * ratio / 2
    for f in folder.iterdir():
        f.unlink()
    with pytest.raises(ApiError) as caught:
        unpack_case_archive(_stored(archive), cases=CASES, folder=folder, max_bytes=1 << 20, max_ratio=ratio * 2,
                            max_header_bytes=HEADER_LIMIT)
    assert caught.value.status == 413 and "the limit of 1048576 bytes" in caught.value.reason


def test_a_zip_declaring_too_many_entries_is_refused_from_its_end_record(tmp_path):
    archive = tmp_path / "many.zip"
    entries = 30_000  # scaled down from 1.5 M
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(entries):
            zf.writestr(f"{i}", b"")
    assert zip_entry_count(archive) == entries
    (tmp_path / "out").mkdir()
    error, peak = _unpack_measured(archive, tmp_path / "out", **LIMITS)
    assert error.status == 422 and f"holds {entries} members; the phase has 2 cases" in error.reason
    assert peak < PEAK_LIMIT, f"counting the entries took {peak} bytes"


def test_the_entry_count_reads_past_a_comment_and_refuses_a_file_without_an_end_record(tmp_path):
    archive = tmp_path / "c.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("CASE_A.mha", b"x")
        zf.comment = b"PK\x05\x06 inside a comment" + b"c" * 60000
    assert zip_entry_count(archive) == 1
    broken = tmp_path / "b.zip"
    broken.write_bytes(b"PK\x03\x04" + bytes(100))
    (tmp_path / "out").mkdir()
    with pytest.raises(ApiError, match="not a readable archive"):
        unpack_case_archive(_stored(broken), cases=CASES, folder=tmp_path / "out", **LIMITS)


def _zip_with_flags(path: Path, *, name: bytes = b"CASE_A.mha", flag: int) -> Path:
    """A one-member zip whose local and central headers carry `flag` (and `name`, as given)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("CASE_A.mha", b"x" * 100)
    data = bytearray(buffer.getvalue())
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = data.find(signature)
        data[at + offset] |= flag & 0xFF
        data[at + offset + 1] |= flag >> 8
    data = data.replace(b"CASE_A.mha", name)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("what", ["encrypted zip", "utf-8 flag, invalid name", "tar.gz without end blocks, junk"])
def test_unreadable_archives_are_refused_with_a_reason_not_an_internal_error(tmp_path, what):
    if what == "encrypted zip":
        archive, reason = _zip_with_flags(tmp_path / "a.zip", flag=0x1), "encrypted"
    elif what.startswith("utf-8"):
        archive = _zip_with_flags(tmp_path / "a.zip", name=b"\xffASE_A.mha", flag=0x800)
        reason = "not a readable archive"
    else:
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w") as tf:
            info, data = _member("CASE_A.mha", b"abc")
            tf.addfile(info, io.BytesIO(data))
        archive = tmp_path / "a.tar.gz"
        archive.write_bytes(gzip.compress(raw.getvalue()[:1024]) + b"junk after the gzip stream")
        reason = "not a readable archive"
    (tmp_path / "out").mkdir()
    with pytest.raises(ApiError) as caught:
        unpack_case_archive(_stored(archive), cases=CASES, folder=tmp_path / "out", **LIMITS)
    assert caught.value.status == 422 and reason in caught.value.reason


def test_a_zip64_end_record_gives_the_real_count(tmp_path):
    archive = tmp_path / "many.zip"
    entries = 0xFFFF + 10  # past what the classic end record can hold: zipfile writes the Zip64 one
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(entries):
            zf.writestr(f"{i}", b"")
    assert zip_entry_count(archive) == entries
    (tmp_path / "out").mkdir()
    error, peak = _unpack_measured(archive, tmp_path / "out", **LIMITS)
    assert error.status == 422 and f"holds {entries} members" in error.reason
    assert peak < PEAK_LIMIT
