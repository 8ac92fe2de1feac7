"""Finding studies in a DICOM tree by content: files grouped by study and series, one PT, CT and SEG picked.

Folder names are never trusted: TCIA's `<patient>/<study>/<series>/*.dcm` and one flat folder read alike.
"""
from __future__ import annotations

import io
import os
import stat
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset
from pydicom.tag import Tag

from petct.studykey import safe_folder_name, study_key

# A full-size study's PET, CT and SEG decode to about 330 MB, the longest scans to about twice that; a small
# (deflated) study announcing more would only exhaust memory while it is read (conversion holds a few copies).
DEFAULT_MAX_DECODED_BYTES = 2 * 1024**3
DEFLATED = b"1.2.840.10008.1.2.1.99"  # Deflated Explicit VR Little Endian: the whole dataset is one zlib stream
INFLATE_CHUNK = 1 << 20
PIXEL_DATA_TAG = 0x7FE00010

HEADER_TAGS = ["StudyInstanceUID", "SeriesInstanceUID", "Modality", "PatientID", "StudyDate",
               "StudyDescription", "SeriesDescription", "SOPClassUID",
               "Rows", "Columns", "NumberOfFrames", "SamplesPerPixel", "BitsAllocated"]


@dataclass
class SeriesFiles:
    uid: str
    modality: str
    description: str
    files: list[Path] = field(default_factory=list)
    decoded_bytes: int = 0  # what its pixel data decodes to, by the headers


@dataclass
class StudyFiles:
    """One study's series as found, the picked PT, CT and SEG files, and why it cannot convert (if so).

    `key` and `folder` (`<patient>/<study>`, the tcia layout's) are unique among the studies found, and safe
    whatever the DICOM text they come from says.
    """

    key: str
    patient: str
    study_name: str
    study_uid: str
    folder: str = ""
    pet: list[Path] = field(default_factory=list)
    ct: list[Path] = field(default_factory=list)
    seg: Path | None = None
    problem: str | None = None
    decoded_bytes: int = 0  # the picked series' pixel data, decoded, by the headers

    def inputs(self) -> list[Path]:
        return sorted([*self.pet, *self.ct, *([self.seg] if self.seg else [])])


@dataclass
class Discovery:
    studies: list[StudyFiles]
    unreadable: list[Path]
    not_regular: list[Path] = field(default_factory=list)  # FIFOs, sockets, devices: skipped unopened
    too_large: list[Path] = field(default_factory=list)  # deflated files inflating past the limit: left unread


def study_name(header) -> str:
    """TCIA's study folder name from the headers: `MM-DD-YYYY-NA-<description>-<last 5 of the UID>`."""
    date = str(header.get("StudyDate", "") or "")
    when = f"{date[4:6]}-{date[6:8]}-{date[0:4]}" if len(date) == 8 else "unknown-date"
    description = " ".join(str(header.get("StudyDescription", "") or "").split()) or "NA"
    return f"{when}-NA-{description}-{str(header.StudyInstanceUID)[-5:]}"


def decoded_bytes(header) -> int:
    """Rows x Columns x frames x samples x bytes per sample: what a file's pixel data decodes to (unpacked).

    From the header alone, before any pixel data is read; values that are not numbers count as 0 (reading the
    file reports them).
    """
    try:
        sizes = [int(header.get(tag, default) or default) for tag, default in
                 (("Rows", 0), ("Columns", 0), ("NumberOfFrames", 1), ("SamplesPerPixel", 1))]
        bits = int(header.get("BitsAllocated", 8) or 8)
    except (TypeError, ValueError):
        return 0
    total = max(1, -(-bits // 8))  # bytes per sample once decoded (1-bit SEG frames unpack to a byte each)
    for size in sizes:
        total *= max(0, size)
    return total


class InflatingReader(io.RawIOBase):
    """A deflated dataset read as a file, inflated only as far as it is read (its header, not its pixel data).

    pydicom inflates a Deflated-transfer-syntax file whole before reading even its header. What was inflated is
    kept, so that the parser may seek back within it.
    """

    def __init__(self, compressed: BinaryIO):
        self._compressed = compressed
        self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        self._inflated = bytearray()
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_END:
            raise io.UnsupportedOperation("a deflated dataset is not inflated to its end for its header")
        self._position = max(0, offset + (self._position if whence == io.SEEK_CUR else 0))
        return self._position

    def readinto(self, buffer) -> int:
        wanted = self._position + len(buffer)
        while len(self._inflated) < wanted and not self._inflater.eof:
            chunk = self._inflater.unconsumed_tail or self._compressed.read(INFLATE_CHUNK)
            if not chunk:
                break  # cut off: what was inflated is all there is
            self._inflated += self._inflater.decompress(chunk, INFLATE_CHUNK)
        data = self._inflated[self._position:wanted]
        buffer[:len(data)] = data
        self._position += len(data)
        return len(data)


def _at_pixel_data(tag, vr, length) -> bool:
    return tag == PIXEL_DATA_TAG


def read_header(path: Path, *, tags: list[str] | None = HEADER_TAGS):
    """`tags` (None: all) of a DICOM file, its pixel data left unread (and, in a deflated file, not inflated)."""
    with open(path, "rb") as fh:
        if _deflated_meta(fh) is None:
            return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=tags)
        wanted = None if tags is None else [Tag(keyword) for keyword in ("SpecificCharacterSet", *tags)]
        try:
            return read_dataset(io.BufferedReader(InflatingReader(fh)), is_implicit_VR=False,
                                is_little_endian=True, stop_when=_at_pixel_data, specific_tags=wanted)
        except zlib.error as exc:
            raise InvalidDicomError(f"not a deflate stream: {exc}") from None


def _deflated_meta(fh: BinaryIO) -> bytes | None:
    """The file meta group of a Deflated-transfer-syntax file, `fh` left just after it; None for any other file."""
    head = fh.read(144)  # preamble, "DICM", then (0002,0000) UL: the meta group's length
    if len(head) < 144 or head[128:132] != b"DICM" or head[132:138] != b"\x02\x00\x00\x00UL":
        return None
    meta = fh.read(int.from_bytes(head[140:144], "little"))
    return meta if DEFLATED in meta else None


def inflated_size(path: Path, *, limit: int) -> int | None:
    """What a Deflated-transfer-syntax file's dataset inflates to, counted while streaming (never held whole), and
    no further than just past `limit`; None for any other file.

    pydicom inflates such a file whole before reading even its header: a few megabytes of zeros inflate to
    gigabytes. Its file meta group, which is never deflated, names the transfer syntax.
    """
    with open(path, "rb") as fh:
        if _deflated_meta(fh) is None:
            return None
        inflater, total = zlib.decompressobj(-zlib.MAX_WBITS), 0
        try:
            while (chunk := fh.read(INFLATE_CHUNK)) and not inflater.eof and total <= limit:
                while chunk and not inflater.eof and total <= limit:  # past the stream's end: padding
                    total += len(inflater.decompress(chunk, INFLATE_CHUNK))
                    chunk = inflater.unconsumed_tail
        except zlib.error:
            return None  # not a deflate stream after all: pydicom's reading says what is wrong
    return total


def _files(root: Path) -> tuple[list[Path], list[Path]]:
    """(regular files, other files) under `root`: opening a FIFO would wait for a writer forever."""
    found, other = [], []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(n for n in names if not n.startswith(".")):
            path = Path(folder) / name
            try:
                regular = stat.S_ISREG(path.stat().st_mode)
            except OSError:
                regular = True  # a broken link: reading it reports it as unreadable
            (found if regular else other).append(path)
    return found, other


def _describe(candidates: list[SeriesFiles]) -> str:
    return ", ".join(f"'{c.description or c.uid}' ({len(c.files)} files)" for c in candidates)


def discover(root: str | Path, *, max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES) -> Discovery:
    """Every study under `root`, with its PT, CT and SEG picked or the reason none could be.

    A deflated file is read only when it inflates to at most `max_decoded_bytes`; past that it is listed in
    `too_large` unread, and a study's files count at the larger of what their headers announce and what they
    inflate to.
    """
    root = Path(root)
    series: dict[str, dict[str, SeriesFiles]] = defaultdict(dict)
    headers: dict[str, object] = {}
    unreadable, too_large = [], []
    files, not_regular = _files(root)
    for path in files:
        try:
            inflated = inflated_size(path, limit=max_decoded_bytes)
            if inflated is not None and inflated > max_decoded_bytes:
                too_large.append(path)
                continue
            ds = read_header(path)
            study_uid, series_uid = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)
        except (InvalidDicomError, AttributeError, OSError, ValueError, EOFError, KeyError):
            unreadable.append(path)
            continue
        headers.setdefault(study_uid, ds)
        entry = series[study_uid].setdefault(series_uid, SeriesFiles(
            uid=series_uid, modality=str(ds.get("Modality", "")).upper(),
            description=str(ds.get("SeriesDescription", "") or "")))
        entry.files.append(path)
        entry.decoded_bytes += max(decoded_bytes(ds), inflated or 0)
    studies = []
    for study_uid, by_series in series.items():
        header = headers[study_uid]
        patient = str(header.get("PatientID", "") or "unknown-patient")
        name = study_name(header)
        study = StudyFiles(key=study_key(patient, name), patient=patient, study_name=name, study_uid=study_uid,
                           folder=f"{safe_folder_name(patient)}/{safe_folder_name(name)}")
        by_modality: dict[str, list[SeriesFiles]] = defaultdict(list)
        for s in by_series.values():
            by_modality[s.modality].append(s)
        problems = []
        for modality, label in (("PT", "PET"), ("CT", "CT"), ("SEG", "SEG")):
            candidates = by_modality.get(modality, [])
            if not candidates:
                problems.append(f"no {label} series")
            elif len(candidates) > 1:
                problems.append(f"{len(candidates)} {label} series, cannot choose: {_describe(candidates)}")
            elif modality == "SEG" and len(candidates[0].files) != 1:
                problems.append(f"SEG series with {len(candidates[0].files)} files (expected one)")
        if problems:
            study.problem = "; ".join(problems)
        else:
            study.pet = sorted(by_modality["PT"][0].files)
            study.ct = sorted(by_modality["CT"][0].files)
            study.seg = by_modality["SEG"][0].files[0]
            study.decoded_bytes = sum(by_modality[m][0].decoded_bytes for m in ("PT", "CT", "SEG"))
        studies.append(study)
    studies.sort(key=lambda s: (s.key, s.study_uid))
    _make_unique(studies)
    return Discovery(studies=studies, unreadable=unreadable, not_regular=not_regular, too_large=too_large)


def _make_unique(studies: list[StudyFiles]) -> None:
    """Give studies whose keys collide (one patient, one day, one description, UIDs ending alike) `-2`, `-3`...

    The suffix goes on the key and on the study's folder alike, and skips any key another study has, so no two
    studies (nor two workers) ever write into one folder.
    """
    taken = {s.key for s in studies}
    first: set[str] = set()
    for study in studies:  # sorted by key, then UID
        if study.key not in first:
            first.add(study.key)
            continue
        n = 2
        while f"{study.key}-{n}" in taken:
            n += 1
        study.key, study.folder = f"{study.key}-{n}", f"{study.folder}-{n}"
        taken.add(study.key)
