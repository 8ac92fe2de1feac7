"""Per-study statistics of a converted set (`studies.csv`) and a summary per diagnosis (`summary.json`).

Lesion figures come from the SUV and SEG images: MTV (ml), SUVmean and SUVmax inside the lesions, TLG
(MTV x SUVmean) and the lesion count (18-connected components). Study facts come from the conversion
report's header record and, where given, the clinical metadata CSV (matched by patient).

A folder in nnU-Net's raw layout (petct.nnunet_raw: the organisers' PSMA and FDG–PSMA NIfTI releases) is
read as it is: PET `_0001` as the SUV, the label as SEG; its cases have no headers, so the facts are the
name's: the tracer (`psma_...`, `fdg_...`) and the patient (`<tracer>_<patient>_<date>`).
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import cc3d
import numpy as np

from dataset.run import REPORT
from petct.atomic import atomic_path
from petct.errors import InputError
from petct.imageio import read_array
from petct.jsonio import read_json, write_json_atomic
from petct.lesions import LESION_CONNECTIVITY
from petct.nnunet_raw import RawCase, raw_cases, tracer_of

PATIENT_COLUMNS = ("subject id", "patient", "patient id", "patientid")
UNKNOWN = "unknown"


@dataclass
class StudyStats:
    key: str
    patient: str
    study: str
    diagnosis: str
    tracer: str  # FDG or PSMA where the study's name says so (petct.nnunet_raw.tracer_of), else unknown
    age: float | None
    sex: str
    weight_kg: float | None
    injected_activity_mbq: float | None
    uptake_time_min: float | None
    scanner: str
    contrast_enhanced_ct: bool | None  # None: no CT header to tell (nnU-Net's raw layout)
    pet_axial_coverage_mm: float
    mtv_ml: float
    suv_mean: float | None
    suv_max: float | None
    tlg: float
    lesion_count: int


def lesion_figures(suv: np.ndarray, seg: np.ndarray, voxel_ml: float) -> dict:
    """MTV, SUVmean, SUVmax, TLG and the 18-connected lesion count of one study."""
    inside = seg > 0
    voxels = int(np.count_nonzero(inside))
    mtv = voxels * voxel_ml
    suv_mean = float(suv[inside].mean()) if voxels else None
    suv_max = float(suv[inside].max()) if voxels else None
    count = int(cc3d.connected_components(inside.astype(np.uint8), connectivity=LESION_CONNECTIVITY).max()) if voxels else 0
    return {"mtv_ml": mtv, "suv_mean": suv_mean, "suv_max": suv_max, "tlg": mtv * (suv_mean or 0.0),
            "lesion_count": count}


def read_metadata(path: Path) -> dict[str, dict[str, str]]:
    """Clinical metadata rows by patient; column names matched without case."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise InputError(f"metadata CSV cannot be read: {exc.strerror or exc}", path=path) from None
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows:
        raise InputError("metadata CSV has no rows (an empty file, or a header alone)", path=path)
    columns = {name.strip().lower(): name for name in rows[0]}
    patient = next((columns[c] for c in PATIENT_COLUMNS if c in columns), None)
    if patient is None:
        raise InputError(f"metadata CSV has no patient column (one of {list(PATIENT_COLUMNS)})", path=path)
    return {row[patient].strip(): {k.strip().lower(): (v or "").strip() for k, v in row.items()} for row in rows}


def _age(text: str) -> float | None:
    """DICOM AS ('058Y') or a plain number."""
    text = (text or "").strip().upper()
    if not text:
        return None
    try:
        return float(text[:-1]) if text[-1] in "YMWD" else float(text)
    except ValueError:
        return None


def study_stats(out: Path, record: dict, metadata: dict[str, dict[str, str]]) -> StudyStats:
    outputs = record["outputs"]
    if "SUV" not in outputs or "SEG" not in outputs:
        raise InputError("stats need the tcia layout's SUV and SEG images", study=record["key"])
    suv, geometry = read_array(out / outputs["SUV"])
    seg, _ = read_array(out / outputs["SEG"])
    headers, factor = record.get("headers") or {}, record.get("suv") or {}
    clinical = metadata.get(record["patient"], {})
    interval = factor.get("decay_interval_s")
    dose = factor.get("injected_dose_bq")
    return StudyStats(
        key=record["key"], patient=record["patient"], study=record["study"],
        diagnosis=clinical.get("diagnosis", "") or "unknown", tracer=tracer_of(record["key"]) or UNKNOWN,
        age=_age(clinical.get("age", "")) if clinical.get("age") else _age(headers.get("patient_age", "")),
        sex=(clinical.get("sex") or headers.get("patient_sex") or "").upper()[:1] or "unknown",
        weight_kg=factor.get("weight_kg"), injected_activity_mbq=dose / 1e6 if dose else None,
        uptake_time_min=interval / 60 if interval is not None else None, scanner=headers.get("scanner", ""),
        contrast_enhanced_ct="nativ" not in headers.get("ct_series_description", "").lower(),
        pet_axial_coverage_mm=geometry.size[2] * geometry.spacing[2],
        **lesion_figures(suv, seg, geometry.voxel_volume_ml))


def raw_study_stats(case: RawCase, metadata: dict[str, dict[str, str]]) -> StudyStats:
    """A case of nnU-Net's raw layout: lesion figures from its PET and label, facts from its name and metadata."""
    suv, geometry = read_array(case.pet)
    seg, seg_geometry = read_array(case.label)
    if seg.shape != suv.shape:
        raise InputError(f"label grid {seg_geometry.size} differs from the PET's {geometry.size}", path=case.label)
    parts = case.name.split("_")
    patient = parts[1] if len(parts) == 3 and tracer_of(case.name) else ""
    clinical = metadata.get(patient, {}) if patient else {}
    return StudyStats(
        key=case.name, patient=patient, study=case.name, diagnosis=clinical.get("diagnosis", "") or UNKNOWN,
        tracer=tracer_of(case.name) or UNKNOWN, age=_age(clinical.get("age", "")),
        sex=(clinical.get("sex") or "").upper()[:1] or UNKNOWN, weight_kg=None, injected_activity_mbq=None,
        uptake_time_min=None, scanner="", contrast_enhanced_ct=None,
        pet_axial_coverage_mm=geometry.size[2] * geometry.spacing[2],
        **lesion_figures(suv, seg, geometry.voxel_volume_ml))


def _mean_sd(values: list[float]) -> dict:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return {"n": 0, "mean": None, "sd": None}
    # One value has no spread: its SD is undefined (null), not 0
    return {"n": len(values), "mean": float(np.mean(values)), "sd": float(np.std(values, ddof=1)) if len(values) > 1 else None}


def summarise(rows: list[StudyStats]) -> dict:
    """Per diagnosis (and for all studies): study count, mean ± SD of MTV, SUVmean, TLG and age, counts by sex."""
    groups: dict[str, list[StudyStats]] = {}
    for row in rows:
        groups.setdefault(row.diagnosis, []).append(row)
    groups["all"] = rows
    summary = {}
    for name, members in groups.items():
        positive = [r for r in members if r.lesion_count > 0]
        sexes: dict[str, int] = {}
        for r in members:
            sexes[r.sex] = sexes.get(r.sex, 0) + 1
        summary[name] = {"studies": len(members), "positive_studies": len(positive),
                         "mtv_ml": _mean_sd([r.mtv_ml for r in positive]),
                         "suv_mean": _mean_sd([r.suv_mean for r in positive]),
                         "tlg": _mean_sd([r.tlg for r in positive]),
                         "age": _mean_sd([r.age for r in members]), "sex": dict(sorted(sexes.items()))}
    return summary


def write_stats(out: str | Path, *, metadata: Path | None = None) -> dict:
    """studies.csv and summary.json in `out` (a converted tcia-layout set, or nnU-Net's raw layout); returns the
    summary."""
    out = Path(out)
    clinical = read_metadata(metadata) if metadata else {}
    raw = raw_cases(out)
    if raw is not None:
        rows = [raw_study_stats(case, clinical) for case in raw]
    else:
        report = read_json(out / REPORT, what="conversion report (run `python -m dataset convert` first, or give "
                                              "a folder in nnU-Net's raw layout: imagesTr/, labelsTr/)")
        rows = [study_stats(out, r, clinical) for r in report.get("studies", []) if r.get("status") != "failed"]
        if not rows:
            raise InputError("no converted studies in the conversion report", path=out / REPORT)
    with atomic_path(out / "studies.csv") as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=[f.name for f in fields(StudyStats)])
            writer.writeheader()
            writer.writerows(asdict(r) for r in rows)
    summary = summarise(rows)
    write_json_atomic(summary, out / "summary.json")
    return summary


def _fmt(stat: dict, digits: int = 1) -> str:
    if stat["mean"] is None:
        return "-"
    mean = f"{stat['mean']:.{digits}f}"
    return mean if stat["sd"] is None else f"{mean} ± {stat['sd']:.{digits}f}"


def print_summary(summary: dict) -> None:
    header = f"{'diagnosis':12s} {'studies':>7s} {'positive':>8s} {'MTV ml':>16s} {'SUVmean':>14s} {'TLG':>18s} {'age':>14s}  sex"
    print(header)
    for name, s in summary.items():
        sexes = " ".join(f"{k}:{v}" for k, v in s["sex"].items())
        print(f"{name:12s} {s['studies']:7d} {s['positive_studies']:8d} {_fmt(s['mtv_ml']):>16s} "
              f"{_fmt(s['suv_mean'], 2):>14s} {_fmt(s['tlg']):>18s} {_fmt(s['age']):>14s}  {sexes}")
