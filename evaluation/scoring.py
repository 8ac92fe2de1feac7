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

    def to_json(self) -> dict:
        """The metrics (null where undefined) beside the file names and warnings."""
        return {**self.metrics.to_json(), "ground_truth_file": self.ground_truth_file,
                "prediction_file": self.prediction_file, "warnings": list(self.warnings)}


def score_files(*, ground_truth: Path, prediction: Path, study: str | None = None) -> StudyResult:
    """Score a prediction file against a ground-truth file; InputError (naming the study) on bad input.

    The voxel volume comes from the ground truth's spacing; the prediction must lie on the ground
    truth's grid (size, spacing, origin, direction within petct.imageio's tolerances).
    """
    ground_truth, prediction = Path(ground_truth), Path(prediction)
    study = study or mask_key(ground_truth)
    gt, pred = read_pair(ground_truth=ground_truth, prediction=prediction, study=study)
    metrics = score_arrays(ground_truth=gt.array, prediction=pred.array,
                           voxel_volume_ml=gt.geometry.voxel_volume_ml)
    return StudyResult(study=study, metrics=metrics, warnings=gt.warnings + pred.warnings,
                       ground_truth_file=str(ground_truth), prediction_file=str(prediction))


def read_pair(*, ground_truth: Path, prediction: Path, study: str) -> tuple[Mask, Mask]:
    """Both masks, the prediction checked to lie on the ground truth's grid; InputError naming the file."""
    gt = read_mask(ground_truth, what="ground truth", study=study, float_labels=True)
    pred = read_mask(prediction, what="prediction", study=study)
    mismatches = grid_mismatches(gt.geometry, pred.geometry)
    if mismatches:
        raise InputError(f"prediction is not on the ground truth's grid: {'; '.join(mismatches)}",
                         path=prediction, study=study)
    return gt, pred
