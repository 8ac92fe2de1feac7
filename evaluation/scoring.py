"""Scoring one study from its two files: read, check that they share a grid, compute the metrics."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from evaluation.masks import Mask, read_mask
from evaluation.metrics import StudyMetrics, score_arrays
from evaluation.studies import mask_key
from petct.errors import InputError
from petct.imageio import grid_mismatches


@dataclass
class StudyResult:
    """The metrics of one study and where they came from."""

    study: str
    metrics: StudyMetrics
    warnings: list[str] = field(default_factory=list)
    ground_truth_file: str = ""
    prediction_file: str = ""

    def files(self) -> dict[str, str]:
        """The files it was scored from, as a study record names them."""
        return {"ground_truth_file": self.ground_truth_file, "prediction_file": self.prediction_file}

    def to_json(self) -> dict:
        """The metrics (null where undefined) beside the file names and warnings."""
        return {**self.metrics.to_json(), **self.files(), "warnings": list(self.warnings)}


def score_files(*, ground_truth: Path, prediction: Path, study: str | None = None) -> StudyResult:
    """Score a prediction file against a ground-truth file; InputError (naming the study) on bad input.

    The voxel volume comes from the ground truth's spacing; the prediction must lie on the ground
    truth's grid (size, spacing, origin, direction within petct.imageio's tolerances).
    """
    ground_truth, prediction = Path(ground_truth), Path(prediction)
    study = study or mask_key(ground_truth)
    gt, pred = read_pair(ground_truth=ground_truth, prediction=prediction, study=study)
    return score_masks(ground_truth=gt, prediction=pred, study=study, ground_truth_file=str(ground_truth),
                       prediction_file=str(prediction), checked_grid=True)


def score_masks(*, ground_truth: Mask, prediction: Mask, study: str, ground_truth_file: str = "",
                prediction_file: str = "", checked_grid: bool = False) -> StudyResult:
    """Score two masks already in memory (the prediction on the ground truth's grid, unless InputError)."""
    if not checked_grid:
        _require_same_grid(ground_truth, prediction, path=prediction_file, study=study)
    metrics = score_arrays(ground_truth=ground_truth.array, prediction=prediction.array,
                           voxel_volume_ml=ground_truth.geometry.voxel_volume_ml)
    return StudyResult(study=study, metrics=metrics, warnings=ground_truth.warnings + prediction.warnings,
                       ground_truth_file=ground_truth_file, prediction_file=prediction_file)


def read_pair(*, ground_truth: Path, prediction: Path, study: str) -> tuple[Mask, Mask]:
    """Both masks, the prediction checked to lie on the ground truth's grid; InputError naming the file."""
    gt = read_mask(ground_truth, what="ground truth", study=study, float_labels=True)
    pred = read_mask(prediction, what="prediction", study=study)
    _require_same_grid(gt, pred, path=prediction, study=study)
    return gt, pred


def _require_same_grid(ground_truth: Mask, prediction: Mask, *, path: str | Path, study: str) -> None:
    mismatches = grid_mismatches(ground_truth.geometry, prediction.geometry)
    if mismatches:
        raise InputError(f"prediction is not on the ground truth's grid: {'; '.join(mismatches)}",
                         path=path, study=study)
