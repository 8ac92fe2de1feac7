"""What a report reads: submissions' metrics.json, an optional per-study CSV, and where the images are."""
from __future__ import annotations

import csv
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

from evaluation.ranking import submission_argument
from petct.errors import InputError
from petct.jsonio import read_json
from petct.layout import SEG_NAME, SUV_NAME, image_stem, list_images
from petct.nnunet_raw import RawFolders, raw_folders
from petct.studykey import SEPARATOR, study_key

# the CSV column naming the study, first found wins; `key` before `study`: `dataset stats` writes both, its
# `study` being the TCIA study folder and `key` the study key the scorer reports
STUDY_COLUMNS = ("study_key", "key", "study", "case")
MAX_GROUPS = 12  # a column with more distinct values is an identifier or a measurement, not a category


def parse_mip(text: str) -> int | None:
    """'all' -> None; 'worst:N' -> N (N >= 1); ValueError otherwise."""
    if text == "all":
        return None
    kind, _, count = text.partition(":")
    if kind != "worst" or not count.isdigit() or int(count) < 1:
        raise ValueError("expected 'all' or 'worst:N' with N >= 1")
    return int(count)


@dataclass(frozen=True)
class SubmissionMetrics:
    """One submission's metrics.json, as read."""

    name: str
    path: Path
    sha256: str
    cases: list[dict]  # per-study records sorted by study, each with its `study` name
    aggregates: dict
    errors: list

    def values(self, metric: str) -> dict[str, float]:
        """study -> value, NaN where undefined."""
        return {c["study"]: number(c.get(metric)) for c in self.cases}


def number(value) -> float:
    """A JSON number as float; null and anything else as NaN."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def read_submission_metrics(argument: str) -> SubmissionMetrics:
    """`[NAME=]PATH` of a metrics.json (named as `rank` names it); InputError naming the file when it is unusable."""
    name, path = submission_argument(argument)
    report = read_json(path, what="metrics.json")
    if not isinstance(report, dict) or not isinstance(report.get("case"), dict) \
            or not isinstance(report.get("aggregates"), dict):
        raise InputError("metrics.json must hold an object with 'case' and 'aggregates'", path=path)
    cases = []
    for key, record in report["case"].items():
        if not isinstance(record, dict):
            raise InputError(f"case {key!r} is not an object", path=path)
        cases.append({**record, "study": str(record.get("study", key))})
    cases.sort(key=lambda c: c["study"])
    return SubmissionMetrics(name=name, path=Path(path), sha256=hashlib.sha256(Path(path).read_bytes()).hexdigest(),
                             cases=cases, aggregates=report["aggregates"], errors=list(report.get("errors") or []))


def read_studies_csv(path: Path) -> dict[str, dict[str, str]]:
    """study -> {column: value} from a CSV with a header naming a study column (see STUDY_COLUMNS)."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot read the studies CSV: {getattr(exc, 'strerror', None) or exc}", path=path) from None
    columns = list(rows[0]) if rows else []
    key = next((c for c in STUDY_COLUMNS if c in columns), None)
    if key is None:
        raise InputError(f"the studies CSV has no study column (one of {', '.join(STUDY_COLUMNS)})", path=path)
    return {row[key]: {c: (row[c] or "") for c in columns if c != key} for row in rows if row.get(key)}


def group_columns(studies: dict[str, dict[str, str]]) -> list[str]:
    """The CSV columns that split studies into a few groups (diagnosis, tracer, centre, ...)."""
    columns = sorted({c for row in studies.values() for c in row})
    # one value per study is an identifier or a measurement, not a grouping
    most = min(MAX_GROUPS, len(studies) - 1)
    return [c for c in columns if 1 < len({row.get(c, "") for row in studies.values()}) <= most]


@dataclass(frozen=True)
class StudyFiles:
    suv: Path
    ground_truth: Path | None
    prediction: Path | None


def find_study_files(images: Path | None, record: dict, *, suv: Path | None = None) -> StudyFiles | None:
    """A study's SUV (`suv`, else `<study>/SUV.*`, `<patient>/<study folder>/SUV.*` for `<patient>__<study folder>`,
    or `<study>_SUV.*` under `images`; in nnU-Net's raw layout `imagesTr/<study>_0001.*`) and its masks (the
    record's file names, else `SEG`/`PRED` found the same way, or `labelsTr/<study>.*`); None without an SUV."""
    study = record["study"]
    raw = raw_folders(images) if images is not None else None
    if raw is not None:
        return _raw_study_files(raw, record, suv=suv)
    beside = [*list_images(images / study), *_two_level(images, study), *list_images(images)] \
        if images is not None else []
    suv = suv if suv is not None and suv.is_file() else _first(beside, {SUV_NAME}, study=study)
    if suv is None:
        return None
    return StudyFiles(suv=suv,
                      ground_truth=_existing(record.get("ground_truth_file")) or _first(beside, {SEG_NAME}, study=study),
                      prediction=_existing(record.get("prediction_file")) or _first(beside, {"PRED"}, study=study))


def _raw_study_files(raw: RawFolders, record: dict, *, suv: Path | None) -> StudyFiles | None:
    files = raw.case_files(record["study"])
    suv = suv if suv is not None and suv.is_file() else (files.pet if files else None)
    if suv is None:
        return None
    return StudyFiles(suv=suv, ground_truth=_existing(record.get("ground_truth_file")) or (files.label if files else None),
                      prediction=_existing(record.get("prediction_file")))


def _two_level(images: Path, study: str) -> list[Path]:
    """The converted dataset's `<patient>/<study folder>/` holding the study `<patient>__<study folder>`."""
    patient, separator, folder = study.partition(SEPARATOR)
    if not (separator and patient and folder):
        return []
    # the key made the folder's name safe (a space in a TCIA study folder reads `_`): find the folder it came from
    found = [child for child in sorted((images / patient).iterdir()) if child.is_dir()
             and study_key(patient, child.name) == study] if (images / patient).is_dir() else []
    return list_images(images / patient / folder) + [path for child in found for path in list_images(child)]


def _existing(text) -> Path | None:
    return Path(text) if isinstance(text, str) and text and Path(text).is_file() else None


def _first(paths: list[Path], names: set[str], *, study: str) -> Path | None:
    """The first of `paths` named `<NAME>.*` in the study's folder or `<study>_<NAME>.*` beside it."""
    folder = study.partition(SEPARATOR)[2] or study
    for path in paths:
        stem = image_stem(path.name)
        in_folder = path.parent.name in (study, folder) or study_key(path.parent.parent.name, path.parent.name) == study
        if (in_folder and stem in names) or stem in {f"{study}_{n}" for n in names}:
            return path
    return None
