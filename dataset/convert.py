"""Converting one study: DICOM PT, CT and SEG in; CT, PET, SUV, CTres and SEG images out, with a record.

Each output goes to a temporary name first and is renamed into place; the study counts as done only once
the run's manifest holds it, so a killed run leaves no study that a rerun would take for finished.
"""
from __future__ import annotations

import errno
import hashlib
import io
import logging
import os
import shutil
import tempfile
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

from dataset.discover import DEFAULT_MAX_DECODED_BYTES, StudyFiles
from dataset.outputs import Images, outside, planned, write_h5
from dataset.segfile import read_seg_on_grid
from dataset.series import read_series
from dataset.suv import suv_factor
from petct.atomic import FILE_MODE, IncompleteWriteError
from petct.errors import InputError
from petct.imageio import image_from_array, write_image_atomic
from petct.resample import resample_ct_onto
from petct.sizes import format_size
from petct.studykey import safe_folder_name

log = logging.getLogger(__name__)
CT_COVERAGE_WARN = 0.999  # below this fraction of the PET grid covered by the CT, the record warns
STAGING_PREFIX = ".staging-"  # a study's outputs are written here, then renamed into place



@dataclass(frozen=True)
class ConvertOptions:
    layout: str = "tcia"
    fmt: str = "nifti"
    keep_segments: bool = False
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES  # per study, by the headers; not part of the outputs

    def to_json(self) -> dict:
        """The options a study's outputs depend on (a rerun with other ones converts it again)."""
        return {k: v for k, v in asdict(self).items() if k != "max_decoded_bytes"}


@dataclass
class StudyRecord:
    """What became of one study: status, reason, warnings, outputs, and every header the SUV and stats use."""

    key: str
    patient: str
    study: str
    status: str  # converted | skipped | failed
    reason: str | None = None
    warnings: list[str] = field(default_factory=list)
    checksum: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    suv: dict | None = None
    headers: dict = field(default_factory=dict)
    ct_coverage: float | None = None
    seg_frames: int | None = None
    segments: dict[int, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


def read_bytes(paths: list[Path]) -> tuple[dict[Path, bytes], str]:
    """Every input file's bytes, read once, and one checksum over their names' order and contents."""
    digest = hashlib.blake2b(digest_size=20)
    contents = {}
    for path in sorted(paths):
        data = path.read_bytes()
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
        contents[path] = data
    return contents, digest.hexdigest()


def _datasets(paths: list[Path], contents: dict[Path, bytes], what: str) -> list:
    """Parse each file's bytes, dropping them once parsed: a full-size CT is ~340 MB of pixel data."""
    out = []
    for path in paths:
        try:
            out.append(pydicom.dcmread(io.BytesIO(contents.pop(path))))
        except Exception as exc:  # noqa: BLE001 - pydicom raises several types for a bad file
            raise InputError(f"{what} file is not readable DICOM: {exc}", path=path) from None
    return out


def _in_series(what: str, files: list[Path], fn, *args, **kwargs):
    """Run a series step; an InputError without a file names the series' folder."""
    try:
        return fn(*args, **kwargs)
    except InputError as exc:
        if exc.path is None:
            raise InputError(f"{what} series: {exc.problem}", path=files[0].parent) from None
        raise


def _headers(pet, ct) -> dict:
    """Header values the statistics use (study level, from the first PET and CT slices)."""
    p, c = pet[0], ct[0]
    return {"patient_sex": str(p.get("PatientSex", "") or ""), "patient_age": str(p.get("PatientAge", "") or ""),
            "patient_birth_date": str(p.get("PatientBirthDate", "") or ""), "study_date": str(p.get("StudyDate", "") or ""),
            "manufacturer": str(p.get("Manufacturer", "") or ""),
            "scanner": f"{p.get('Manufacturer', '')} {p.get('ManufacturerModelName', '')}".strip(),
            "ct_series_description": str(c.get("SeriesDescription", "") or ""),
            "pet_series_description": str(p.get("SeriesDescription", "") or "")}


def build_images(study: StudyFiles, contents: dict[Path, bytes], record: StudyRecord, *,
                 keep_segments: bool) -> Images:
    """Read, check and convert the three series of `study` (records the SUV inputs and warnings)."""
    pet = _in_series("PET", study.pet, read_series, _datasets(study.pet, contents, "PET"), dtype=np.float32)
    factor = _in_series("PET", study.pet, suv_factor, pet.slices)
    record.suv = factor.to_json()
    record.warnings += [f"SUV: {warning}" for warning in factor.warnings]
    ct = _in_series("CT", study.ct, read_series, _datasets(study.ct, contents, "CT"), dtype=np.int16)
    record.headers = _headers(pet.slices, ct.slices)
    pet_for = str(pet.slices[0].get("FrameOfReferenceUID", ""))
    if str(ct.slices[0].get("FrameOfReferenceUID", "")) != pet_for:
        record.warnings.append("CT and PET have different frames of reference; the CT is placed by its "
                               "coordinates as if they were one")
    ct_image = image_from_array(ct.array, ct.geometry)
    ctres_image, coverage = resample_ct_onto(ct_image, pet.geometry, path=study.ct[0].parent)
    record.ct_coverage = coverage
    if coverage < CT_COVERAGE_WARN:
        record.warnings.append(f"the CT covers {100 * coverage:.1f} % of the PET's field of view; "
                               "CTres is -1024 HU outside it")
    ctres = np.rint(sitk.GetArrayViewFromImage(ctres_image)).astype(np.int16)
    seg = read_seg_on_grid(study.seg, pet.geometry, frame_of_reference=pet_for)
    record.seg_frames = seg.frames
    record.segments = seg.segment_names
    if not seg.labels.any():
        record.warnings.append("the SEG is empty: converted as a negative study")
    suv = (pet.array * np.float32(factor.factor)).astype(np.float32)
    return Images(ct=ct.array, ct_geometry=ct.geometry, pet=pet.array, suv=suv, ctres=ctres,
                  seg=seg.labels if keep_segments else seg.binary(), pet_geometry=pet.geometry)


def _write_all(images: Images, out: Path, paths: dict[str, str], *, key: str, record: StudyRecord) -> None:
    """Write every output under a temporary name in a staging folder, then rename them into place."""
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{key}-", dir=out))
    try:
        named = images.named()
        staged = {}
        for name, relative in paths.items():
            tmp = staging / f"{name}{''.join(Path(relative).suffixes)}"
            if name == "h5":
                write_h5(images, tmp, key=key, attributes={"patient": record.patient, "study": record.study})
            else:
                write_image_atomic(image_from_array(*named[name]), tmp, fast_gzip=True)
            os.chmod(tmp, FILE_MODE)
            staged[name] = tmp
        for name, relative in paths.items():
            target = out / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged[name], target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _named_by(folder: str, study: StudyFiles) -> str:
    """Which DICOM text named an output folder, for the message that refuses it."""
    patient = safe_folder_name(study.patient)
    if folder == patient:
        return f"the folder named by PatientID {study.patient[:80]!r}"
    if folder.startswith(patient + "/") or study.key in folder:
        return (f"the folder named by PatientID {study.patient[:80]!r} with StudyDate, StudyDescription and "
                f"StudyInstanceUID ({study.study_name[:80]!r})")
    return "an output folder"


def convert_study(study: StudyFiles, out: str | Path, options: ConvertOptions, *,
                  previous: dict | None = None) -> StudyRecord:
    """Convert one study into `out`; never raises for bad input (the record says failed, and why).

    `previous` is the manifest's entry from an earlier run: when its checksum and options match and its
    outputs exist, the study is skipped.
    """
    out = Path(out)
    record = StudyRecord(key=study.key, patient=study.patient, study=study.study_name, status="failed")
    if study.problem:
        record.reason = study.problem
        return record
    if study.decoded_bytes > options.max_decoded_bytes:
        record.reason = (f"pixel data decodes to {format_size(study.decoded_bytes)} (Rows x Columns x frames x bytes "
                         f"of its PET, CT and SEG files), over the limit of {format_size(options.max_decoded_bytes)} "
                         f"(--max-decoded-bytes); nothing decoded")
        return record
    paths = planned(key=study.key, folder=study.folder, layout=options.layout, fmt=options.fmt)
    escape = next((part for relative in paths.values() if (part := outside(out, relative))), None)
    if escape is not None:
        record.reason = f"{_named_by(escape, study)} resolves outside OUT (a link?): {escape}; nothing written"
        return record
    try:
        contents, record.checksum = read_bytes(study.inputs())
        if (previous and previous.get("checksum") == record.checksum and previous.get("options") == options.to_json()
                and all((out / p).is_file() for p in previous.get("outputs", {}).values())):
            previous_record = dict(previous.get("record", {}))
            previous_record.update(status="skipped")
            return StudyRecord(**{k: v for k, v in previous_record.items() if k in StudyRecord.__dataclass_fields__})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # highdicom/pydicom chatter on valid files; problems raise
            images = build_images(study, contents, record, keep_segments=options.keep_segments)
        del contents
        _write_all(images, out, paths, key=study.key, record=record)
    except InputError as exc:
        record.reason = exc.describe()
        return record
    except OSError as exc:  # IncompleteWriteError included: an output that came out short
        full = isinstance(exc, IncompleteWriteError) or exc.errno in (errno.ENOSPC, errno.EDQUOT)
        record.reason = (f"{'the disk is full' if full else 'cannot write the outputs'} "
                         f"({getattr(exc, 'problem', None) or exc.strerror or exc}); nothing of this study was kept")
        return record
    except Exception as exc:  # noqa: BLE001 - a malformed file must fail its study, never the run
        record.reason = f"{type(exc).__name__}: {exc}"
        return record
    record.status = "converted"
    record.outputs = paths
    return record
