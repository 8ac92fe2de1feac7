"""The kit's metrics in the shape of nnU-Net's summary.json, for tools that read `nnUNetv2_evaluate_folder`'s output.

nnU-Net writes `metric_per_case` (each with `metrics` by label, `reference_file`, `prediction_file`), `mean`
(by label, the mean over cases of each metric, undefined values left out) and `foreground_mean` (the mean
over foreground labels). The kit has one foreground label, "1". Its metrics go under their own names, with
"Dice" (the kit's Dice: undefined for a study without lesions) as nnU-Net names it; undefined values are
null, as everywhere in the kit's JSON.
"""
from __future__ import annotations

import math
from pathlib import Path

from evaluation.scoring import StudyResult
from petct.jsonio import write_json_atomic

LABEL = "1"  # lesion, the one foreground label


def _metrics(result: StudyResult) -> dict[str, float]:
    values = result.metrics.to_json()
    return {"Dice": values["dice"], **values}


def _mean(values: list) -> float | None:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return math.fsum(finite) / len(finite) if finite else None


def nnunet_summary(results: list[StudyResult]) -> dict:
    """{"metric_per_case": [...], "mean": {"1": {...}}, "foreground_mean": {...}} over these studies."""
    per_case = [{"metrics": {LABEL: _metrics(r)}, "reference_file": r.ground_truth_file,
                 "prediction_file": r.prediction_file} for r in results]
    names = list(_metrics(results[0])) if results else ["Dice"]
    mean = {name: _mean([case["metrics"][LABEL][name] for case in per_case]) for name in names}
    return {"foreground_mean": mean, "mean": {LABEL: dict(mean)}, "metric_per_case": per_case}


def write_nnunet_summary(results: list[StudyResult], path: Path) -> Path:
    return write_json_atomic(nnunet_summary(results), path)
