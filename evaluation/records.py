"""The shape of a study's metrics record and of metrics.json: one schema and one builder for the scorer, the
service (job metrics, scoring answers, phase submissions) and the pages' reports."""
from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any, TypedDict

from evaluation.metrics import StudyMetrics
from petct.studykey import study_key


class StudyRecord(TypedDict, total=False):
    """One study's record under metrics.json's `case` (and a job's or a scoring request's metrics).

    The metrics are StudyMetrics' (volumes in ml, null where undefined); the file names are as the scorer was
    given them (the service: the client's names; a hidden ground truth's is left out); `job` where the study
    came from a grand-challenge job.
    """

    study: str
    dice: float | None
    false_positive_volume: float | None
    false_negative_volume: float | None
    gt_volume: float | None
    pred_volume: float | None
    gt_lesions: int | None
    detected_lesions: int | None
    fp_components: int | None
    ground_truth_file: str | None
    prediction_file: str | None
    warnings: list[str]
    job: str | None


class MetricsJson(TypedDict):
    """metrics.json (without `kit_version`, which evaluation.report.write_report adds when writing it)."""

    case: dict[str, StudyRecord]
    aggregates: dict[str, Any]
    errors: list[dict[str, Any]]


def study_record(metrics: StudyMetrics, *, study: str, files: Mapping[str, str | None] | None = None,
                 warnings: Sequence[str] = (), job: str | None = None, with_job: bool = False) -> StudyRecord:
    """A study's record: its name, the metrics (null where undefined), the files given (`ground_truth_file`,
    `prediction_file`; a key left out is left out of the record), the warnings, and `job` where `with_job`."""
    unknown = set(files or {}) - {"ground_truth_file", "prediction_file"}
    if unknown:
        raise ValueError(f"not a file of a study record: {sorted(unknown)}")
    record: dict[str, Any] = {"study": study, **metrics.to_json(), **(files or {}), "warnings": list(warnings)}
    if with_job:
        record["job"] = job
    return record  # type: ignore[return-value]


def metrics_json(case: Mapping[str, Any], *, aggregates: Mapping[str, Any],
                 errors: Sequence[Mapping[str, Any]] = ()) -> MetricsJson:
    """metrics.json's content: the records by case key, the statistics over them, and every problem."""
    return {"case": dict(case), "aggregates": dict(aggregates), "errors": [dict(e) for e in errors]}


def case_key(study: str, *, taken: Collection[str] = ()) -> str:
    """The key of a study under `case`: petct.studykey.study_key of its name, unique among `taken`.

    The leaderboard addresses values by dotted paths (`case.<study>.dice`), so a key must hold no dot;
    study names made of DICOM UIDs or dates often do. Two-level studies (`<patient>__<study folder>`)
    are named by their key already, so it is their name here too.
    """
    base = study_key(study)
    key, number = base, 1
    while key in taken:
        number += 1
        key = f"{base}_{number}"
    return key
