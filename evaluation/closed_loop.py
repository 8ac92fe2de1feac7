"""Scoring the autoPET V (2026) closed loop: each step's Dice and DMM, each study's areas, the submission's figures.

Per step (the organisers' `interactive_loop.py` and `metrics.py`, docs/editions.md):
- `dice`: the loop's Dice, 2|A∩B| / (|A| + |B|), and 1 when both masks are empty; a lesion-free study
  thus scores 1 with an empty mask and 0 with any false positive (`metrics.py`'s own Dice is undefined there);
- `dmm`: the per-study detection F1 (evaluation.detection), undefined on a lesion-free study, with its
  `tp`, `fp`, `fn`;
- the false positive and false negative volumes as every edition defines them (18-connected, any overlap).
A step that failed (no mask, a timeout, the published simulation's failure) scores Dice = DMM = 0.
Per study: the area under each curve over the steps (trapezoid, unit spacing) and the last step's values.
Per submission: the means, and the challenge's detection figure, the pooled F1 of each step over the
studies, with its area.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from evaluation.detection import Detection, detect, subset_pooled_f1
from evaluation.interactive import area_under_curve
from evaluation.metrics import score_arrays
from petct.jsonio import strict

CURVES = ("dice", "dmm")


@dataclass(frozen=True)
class StepMetrics:
    """One step's metrics; NaN marks an undefined value, `failed` a step scored 0 without a mask."""

    dice: float
    dmm: float
    tp: int | None
    fp: int | None
    fn: int | None
    false_positive_volume: float
    false_negative_volume: float
    failed: bool = False

    @property
    def detection(self) -> Detection | None:
        return None if self.tp is None else Detection(tp=self.tp, fp=self.fp, fn=self.fn)

    def to_json(self) -> dict:
        return strict(asdict(self))

    @classmethod
    def failure(cls) -> StepMetrics:
        """A failed step as the organisers' loop scores it: Dice and DMM 0, no volumes, no lesion counts."""
        return cls(dice=0.0, dmm=0.0, tp=None, fp=None, fn=None, false_positive_volume=math.nan,
                   false_negative_volume=math.nan, failed=True)


def loop_dice(*, ground_truth: np.ndarray, prediction: np.ndarray) -> float:
    """The loop's Dice: 1.0 when both masks are empty."""
    gt, pred = ground_truth != 0, prediction != 0
    denominator = int(np.count_nonzero(gt)) + int(np.count_nonzero(pred))
    if denominator == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(gt & pred)) / denominator


def score_step(*, ground_truth: np.ndarray, prediction: np.ndarray, voxel_volume_ml: float) -> StepMetrics:
    """One step's metrics of a binary prediction against a binary ground truth on the same grid."""
    classic = score_arrays(ground_truth=ground_truth, prediction=prediction, voxel_volume_ml=voxel_volume_ml)
    counts = detect(ground_truth=ground_truth, prediction=prediction)
    return StepMetrics(dice=loop_dice(ground_truth=ground_truth, prediction=prediction), dmm=counts.f1,
                       tp=counts.tp, fp=counts.fp, fn=counts.fn,
                       false_positive_volume=classic.false_positive_volume,
                       false_negative_volume=classic.false_negative_volume)


def study_summary(steps: list[StepMetrics]) -> dict[str, float]:
    """Areas under the Dice and DMM curves (NaN when a value is undefined) and the last step's values."""
    out: dict[str, float] = {}
    for metric in CURVES:
        curve = [getattr(s, metric) for s in steps]
        out[f"{metric}_auc"] = area_under_curve(curve)
        out[f"{metric}_final"] = curve[-1]
    out["false_positive_volume_final"] = steps[-1].false_positive_volume
    out["false_negative_volume_final"] = steps[-1].false_negative_volume
    return out


def pooled_dmm_curve(studies: dict[str, list[StepMetrics]], *, subsets: dict[str, str] | None = None
                     ) -> list[float]:
    """The challenge's detection figure per step: the subset-pooled F1 over the studies' counts.

    A failed step has no counts; it adds nothing to the pool (the organisers' loop stores 0 as its
    per-study F1, which the pool cannot hold).
    """
    n_steps = len(next(iter(studies.values())))
    curve = []
    for k in range(n_steps):
        counts = {study: steps[k].detection for study, steps in studies.items() if steps[k].detection is not None}
        curve.append(subset_pooled_f1(counts, subsets=subsets)[0] if counts else math.nan)
    return curve
