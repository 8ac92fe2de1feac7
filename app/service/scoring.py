"""Scoring uploaded files with the evaluation container's scorer, answering in terms the client knows."""
from __future__ import annotations

from pathlib import Path

from app.service.errors import ApiError, echo_name
from evaluation.scoring import score_files
from petct.errors import InputError


def score_uploaded(*, ground_truth: Path, prediction: Path, study: str, names: dict[str, str | None],
                   hide_ground_truth: bool = False) -> dict:
    """The scorer's per-study record, with server paths replaced by the client's names.

    `names` maps "ground_truth" and "prediction" to the names the client gave (None: unnamed). With
    `hide_ground_truth` (organiser mode) nothing about the ground-truth file is returned but metrics.
    """
    try:
        result = score_files(ground_truth=ground_truth, prediction=prediction, study=study)
    except InputError as exc:
        field = "prediction" if exc.path == str(prediction) else "ground_truth"
        if hide_ground_truth and field == "ground_truth":
            raise ApiError(500, f"the ground truth of case {study} could not be read; tell the organiser") from None
        raise ApiError(422, exc.problem, field=field, file=names.get(field)) from None
    record = result.to_json()
    record["study"] = study
    record["prediction_file"] = echo_name(names.get("prediction"))
    if hide_ground_truth:
        record.pop("ground_truth_file", None)
        record["warnings"] = [w for w in record.get("warnings", []) if not w.startswith("ground truth")]
    else:
        record["ground_truth_file"] = echo_name(names.get("ground_truth"))
    return record
