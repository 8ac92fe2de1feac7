"""Phantom studies written as DICOM the way a PET/CT scanner would: the kit's own test data.

Default: a Siemens Biograph mCT-like study — PET in BQML (int16 with a rescale slope per slice), a
radiopharmaceutical sequence with date-times, decay correction START; CT on a finer grid of its own with
rescale slope 1 and intercept -1024; the lesions as a DICOM-SEG (highdicom) referencing the PET slices.
Vendor variants change exactly what the SUV rules must handle (see dataset.suv).
"""
from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import cc3d
import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, PositronEmissionTomographyImageStorage

from dataset.segexport import write_seg
from dataset.suv import GE_SCAN_DATETIME, PHILIPS_ACTIVITY_SCALE, PHILIPS_SUV_SCALE
from dataset.uids import uid
from petct.atomic import atomic_path
from petct.imageio import Geometry
from petct.lesions import LESION_CONNECTIVITY
from petct.phantom import Study, make_study
from petct.resample import resample_ct_array

VENDORS = ("siemens", "ge", "philips-bqml", "philips-cnts")
F18_HALF_LIFE_S = 6586.2
INT16_MAX = 32767


@dataclass(frozen=True)
class SynthOptions:
    """What the headers of a synthetic study say; the defaults are a Siemens mCT study."""

    vendor: str = "siemens"
    decay_correction: str = "START"
    weight_kg: float = 74.0
    dose_bq: float = 312.0e6
    injection: dt.datetime = dt.datetime(2019, 3, 14, 9, 12, 0)
    uptake_s: float = 3840.0  # injection to scan start
    injection_time_only: bool = False  # old writers: RadiopharmaceuticalStartTime without a date
    series_after_acquisition: bool = False  # a post-processed series whose SeriesTime is after the scan
    native_ct: bool = False  # CT series description with "nativ": not contrast-enhanced
    segments: int = 1  # lesions spread over this many SEG segments
    diagnosis_description: str = "PET-CT Ganzkoerper primaer mit KM"


@dataclass
class SynthStudy:
    """A written study: its folders, the phantom it came from, and the true SUV factor."""

    patient: str
    study_uid: str
    pet_dir: Path
    ct_dir: Path
    seg_path: Path
    phantom: Study
    ct: sitk.Image
    suv_factor: float
    pet_files: list[Path] = field(default_factory=list)


def ct_grid(pet: Geometry) -> Geometry:
    """A CT grid over the PET's field of view: 1.28x finer in-plane (512 for 400), 2x finer axially."""
    size = (round(pet.size[0] * 1.28), round(pet.size[1] * 1.28), pet.size[2] * 2)
    spacing = tuple(n * s / m for n, s, m in zip(pet.size, pet.spacing, size))
    return Geometry(size=size, spacing=spacing, origin=pet.origin, direction=pet.direction)


def make_ct(study: Study, grid: Geometry) -> sitk.Image:
    """The phantom's CT on its own finer grid (int16 HU), interpolated from its CT on the PET grid."""
    ct, _ = resample_ct_array(study.ctres, grid, path=study.name)
    image = sitk.GetImageFromArray(np.clip(np.rint(ct), -1024, 3071).astype(np.int16))
    return grid.apply_to(image)


def _dt(value: dt.datetime) -> tuple[str, str]:
    return value.strftime("%Y%m%d"), value.strftime("%H%M%S.%f")


def _base(*, patient: str, study_uid: str, series_uid: str, modality: str, sop_class: str, options: SynthOptions,
          scan: dt.datetime, frame_of_reference: str) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.Modality = modality
    ds.PatientName = f"{patient}^"  # family name only; the caret says so
    ds.PatientID = patient
    ds.PatientBirthDate = "19610101"
    ds.PatientSex = "F"
    ds.PatientAge = "058Y"
    ds.PatientWeight = f"{options.weight_kg:g}"
    ds.PatientSize = "1.68"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = frame_of_reference
    ds.StudyDate, ds.StudyTime = _dt(scan)
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = options.diagnosis_description
    ds.PositionReferenceIndicator = ""
    ds.PatientPosition = "FFS"
    ds.Manufacturer = {"siemens": "SIEMENS", "ge": "GE MEDICAL SYSTEMS"}.get(options.vendor, "Philips Medical Systems")
    ds.ManufacturerModelName = {"siemens": "Biograph128", "ge": "Discovery 710"}.get(options.vendor, "Vereos")
    ds.SeriesNumber = {"PT": 4, "CT": 2}[modality]
    return ds


def _geometry_tags(ds: Dataset, geometry: Geometry, k: int) -> None:
    d = np.array(geometry.direction).reshape(3, 3)
    position = np.array(geometry.origin) + k * geometry.spacing[2] * d[:, 2]
    ds.ImageOrientationPatient = [f"{v:.10g}" for v in (*d[:, 0], *d[:, 1])]
    ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
    ds.PixelSpacing = [f"{geometry.spacing[1]:.10g}", f"{geometry.spacing[0]:.10g}"]
    ds.SliceThickness = f"{geometry.spacing[2]:.6g}"
    ds.SliceLocation = f"{position[2]:.6f}"
    ds.Rows, ds.Columns = geometry.size[1], geometry.size[0]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15


def _save(ds: Dataset, path: Path) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)


def true_suv_factor(options: SynthOptions) -> float:
    """SUV per Bq/ml that the written headers imply (the QIBA formula, written out independently)."""
    dose = options.dose_bq
    if options.decay_correction == "START":
        dose *= 0.5 ** (options.uptake_s / F18_HALF_LIFE_S)
    return options.weight_kg * 1000.0 / dose


def _radiopharmaceutical(options: SynthOptions) -> Dataset:
    item = Dataset()
    item.Radiopharmaceutical = "Fluorodeoxyglucose"
    date, time = _dt(options.injection)
    item.RadiopharmaceuticalStartTime = time
    if not options.injection_time_only:
        item.RadiopharmaceuticalStartDateTime = date + time
    item.RadionuclideTotalDose = f"{options.dose_bq:.6g}"
    item.RadionuclideHalfLife = f"{F18_HALF_LIFE_S}"
    item.RadionuclidePositronFraction = "0.9673"
    return item


def write_pet(study: Study, folder: Path, *, patient: str, study_uid: str, options: SynthOptions,
              frame_of_reference: str) -> tuple[list[Dataset], list[Path]]:
    """The PET slices (int16, per-slice slope) written to `folder`; returns the datasets and paths."""
    scan = options.injection + dt.timedelta(seconds=options.uptake_s)
    series_uid = uid(study_uid, "PT")
    geometry = Geometry.of(study.suv)
    suv = sitk.GetArrayFromImage(study.suv).astype(np.float64)
    factor = true_suv_factor(options)
    activity = suv / factor  # Bq/ml
    activity_scale = 1.6  # Philips CNTS: counts x this = Bq/ml
    stored_values = activity / activity_scale if options.vendor == "philips-cnts" else activity
    series_time = scan + dt.timedelta(minutes=25) if options.series_after_acquisition or options.vendor == "ge" else scan
    # Bed positions: slices acquired from one minute after the scan start (Siemens, Philips) or at it (GE).
    first_bed = scan + dt.timedelta(seconds=0 if options.series_after_acquisition and options.vendor != "ge" else 60)
    datasets, paths = [], []
    nz = geometry.size[2]
    for k in range(nz):
        ds = _base(patient=patient, study_uid=study_uid, series_uid=series_uid, modality="PT",
                   sop_class=PositronEmissionTomographyImageStorage, options=options, scan=scan,
                   frame_of_reference=frame_of_reference)
        ds.SOPInstanceUID = uid(series_uid, k)
        ds.InstanceNumber = k + 1
        ds.SeriesDescription = "PET WB AC"
        ds.SeriesDate, ds.SeriesTime = _dt(series_time)
        ds.AcquisitionDate, ds.AcquisitionTime = _dt(first_bed + dt.timedelta(seconds=120 * (k * 5 // nz)))
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.Units = "CNTS" if options.vendor == "philips-cnts" else "BQML"
        ds.CorrectedImage = ["NORM", "DTIM", "ATTN", "SCAT", "DECY", "RAN"]
        ds.DecayCorrection = options.decay_correction
        ds.RadiopharmaceuticalInformationSequence = DicomSequence([_radiopharmaceutical(options)])
        _geometry_tags(ds, geometry, k)
        ds.PixelRepresentation = 1
        peak = float(np.abs(stored_values[k]).max())
        slope = peak / INT16_MAX if peak > 0 else 1.0
        ds.RescaleSlope = f"{slope:.10g}"
        ds.RescaleIntercept = "0"
        slope = float(ds.RescaleSlope)  # what a reader will see
        ds.PixelData = np.clip(np.rint(stored_values[k] / slope), -INT16_MAX, INT16_MAX).astype("<i2").tobytes()
        if options.vendor == "ge":
            ds.add_new(0x00090010, "LO", "GEMS_PETD_01")
            ds.add_new(GE_SCAN_DATETIME, "DT", scan.strftime("%Y%m%d%H%M%S.%f"))
        if options.vendor.startswith("philips"):
            ds.add_new(0x70530010, "LO", "Philips PET Private Group")
            ds.add_new(PHILIPS_SUV_SCALE, "DS", f"{factor * (activity_scale if options.vendor == 'philips-cnts' else 1):.10g}")
            ds.add_new(PHILIPS_ACTIVITY_SCALE, "DS", f"{activity_scale if options.vendor == 'philips-cnts' else 1:.10g}")
        path = folder / f"PT_{k + 1:04d}.dcm"
        _save(ds, path)
        datasets.append(ds)
        paths.append(path)
    return datasets, paths


def write_ct(ct: sitk.Image, folder: Path, *, patient: str, study_uid: str, options: SynthOptions,
             frame_of_reference: str) -> list[Path]:
    """The CT slices (stored HU + 1024, intercept -1024) written to `folder`."""
    scan = options.injection + dt.timedelta(seconds=options.uptake_s - 300)
    series_uid = uid(study_uid, "CT")
    geometry = Geometry.of(ct)
    hu = sitk.GetArrayFromImage(ct)
    paths = []
    for k in range(geometry.size[2]):
        ds = _base(patient=patient, study_uid=study_uid, series_uid=series_uid, modality="CT",
                   sop_class=CTImageStorage, options=options, scan=scan, frame_of_reference=frame_of_reference)
        ds.SOPInstanceUID = uid(series_uid, k)
        ds.InstanceNumber = k + 1
        ds.SeriesDescription = "CT nativ 3.0 B31f" if options.native_ct else "CT WB 3.0 B31f KM"
        ds.SeriesDate, ds.SeriesTime = _dt(scan)
        ds.AcquisitionDate, ds.AcquisitionTime = _dt(scan)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.KVP = "120"
        _geometry_tags(ds, geometry, k)
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.RescaleSlope = "1"
        ds.RescaleIntercept = "-1024"
        ds.RescaleType = "HU"
        ds.PixelData = (hu[k].astype(np.int32) + 1024).astype("<u2").tobytes()
        path = folder / f"CT_{k + 1:04d}.dcm"
        _save(ds, path)
        paths.append(path)
    return paths


def _segment_labels(mask: np.ndarray, segments: int) -> np.ndarray:
    """Lesions (18-connected components) dealt round-robin to segments 1..`segments`."""
    components = cc3d.connected_components(mask.astype(np.uint8), connectivity=LESION_CONNECTIVITY)
    labels = np.zeros(mask.shape, dtype=np.uint8)
    for index in range(1, int(components.max()) + 1):
        labels[components == index] = (index - 1) % segments + 1
    return labels


def write_study(folder: str | Path, *, seed: int, size: str | tuple[int, int, int] = "tiny",
                n_lesions: int | None = None, options: SynthOptions = SynthOptions()) -> SynthStudy:
    """One phantom study as TCIA lays it out: `<folder>/<patient>/<study>/<series>/*.dcm`."""
    phantom = make_study(seed, size=size, n_lesions=n_lesions)
    patient = f"PETCT_{hashlib.sha256(str(seed).encode()).hexdigest()[:10]}"
    study_uid = uid("study", seed, patient)
    scan = options.injection + dt.timedelta(seconds=options.uptake_s)
    study_dir = Path(folder) / patient / f"{scan:%m-%d-%Y}-NA-PET-CT-{study_uid[-5:]}"
    frame_of_reference = uid(study_uid, "for")
    pet_dir, ct_dir = study_dir / "PET", study_dir / "CT"
    pet, pet_paths = write_pet(phantom, pet_dir, patient=patient, study_uid=study_uid, options=options,
                               frame_of_reference=frame_of_reference)
    ct = make_ct(phantom, ct_grid(Geometry.of(phantom.suv)))
    write_ct(ct, ct_dir, patient=patient, study_uid=study_uid, options=options, frame_of_reference=frame_of_reference)
    mask = sitk.GetArrayFromImage(phantom.seg)
    labels = _segment_labels(mask, options.segments) if options.segments > 1 else mask
    seg_path = write_seg(labels, pet, study_dir / "SEG" / "1-1.dcm", series_uid=uid(study_uid, "SEG"),
                         segments=options.segments)
    return SynthStudy(patient=patient, study_uid=study_uid, pet_dir=pet_dir, ct_dir=ct_dir, seg_path=seg_path,
                      phantom=phantom, ct=ct, suv_factor=true_suv_factor(options), pet_files=pet_paths)
