"""Lesion detection as autoPET V (2026) scores it: the detection matching metric (DMM), an F1 over lesions.

The rules follow the organisers' `metrics.py` (`MetricEvaluator`, read and re-written here; docs/editions.md):
lesions are the 18-connected components of each mask; a true lesion is detected (TP) when some predicted
component overlaps it with an intersection over union of at least 0.1, a predicted component is a false
positive when it reaches 0.1 with no true lesion, and one component may match several lesions and the
reverse without penalty. F1 = 2TP / (2TP + FP + FN); undefined (NaN) when the truth has no lesion, 0 when
nothing is detected. The loop stores this per study; the challenge's detection figure is the pooled F1 of
the TP, FP and FN summed over studies (lesion-free studies' false positives count there), per test subset
and then averaged over the subsets.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from evaluation.metrics import Labelled, _binary_u8, _intersection

IOU_THRESHOLD = 0.1


@dataclass(frozen=True)
class Detection:
    """Lesion counts of one study (or summed over several): detected, false positive, missed."""

    tp: int
    fp: int
    fn: int

    @property
    def f1(self) -> float:
        """The organisers' F1: NaN without any true lesion, 0 with none detected."""
        if self.tp + self.fn == 0:
            return math.nan
        if self.tp == 0:
            return 0.0
        return 2 * self.tp / (2 * self.tp + self.fp + self.fn)

    def __add__(self, other: Detection) -> Detection:
        return Detection(tp=self.tp + other.tp, fp=self.fp + other.fp, fn=self.fn + other.fn)


def detect(*, ground_truth: np.ndarray, prediction: np.ndarray, iou_threshold: float = IOU_THRESHOLD) -> Detection:
    """TP, FP and FN of a binary prediction against a binary ground truth on the same grid."""
    if ground_truth.shape != prediction.shape:
        raise ValueError(f"shapes differ: ground truth {ground_truth.shape}, prediction {prediction.shape}")
    gt = Labelled.of(_binary_u8(ground_truth))
    pred = Labelled.of(_binary_u8(prediction))
    both = _intersection(gt.box, pred.box)
    matched_gt: set[int] = set()
    matched_pred: set[int] = set()
    if both is not None:
        gt_labels, pred_labels = gt.labels_in(both), pred.labels_in(both)
        overlap = (gt_labels != 0) & (pred_labels != 0)
        # every overlapping (lesion, component) pair with its shared voxels, in one np.unique
        codes = gt_labels[overlap].astype(np.int64) * (pred.count + 1) + pred_labels[overlap]
        pairs, shared = np.unique(codes, return_counts=True)
        for code, inter in zip(pairs.tolist(), shared.tolist()):
            i, j = divmod(code, pred.count + 1)
            union = int(gt.sizes[i - 1]) + int(pred.sizes[j - 1]) - inter
            if inter / union >= iou_threshold:
                matched_gt.add(i)
                matched_pred.add(j)
    return Detection(tp=len(matched_gt), fp=pred.count - len(matched_pred), fn=gt.count - len(matched_gt))


def subset_of(case: str) -> str:
    """A test subset as the organisers name it: the case name's first two '_'-separated fields (tracer_centre)."""
    return "_".join(case.split("_")[:2])


def pooled_f1(detections: Iterable[Detection]) -> float:
    """One F1 over the TP, FP and FN summed across studies."""
    return sum(detections, Detection(0, 0, 0)).f1


def subset_pooled_f1(detections: dict[str, Detection], *, subsets: dict[str, str] | None = None
                     ) -> tuple[float, dict[str, float]]:
    """The challenge's detection figure: pooled F1 per subset, averaged over the subsets; and each subset's F1.

    `subsets` maps a case to its subset (the organisers name test cases `tracer_centre_...` and take
    `subset_of` the name); None pools every case as one subset. Subsets without any true lesion (F1
    undefined) are skipped in the mean, as the organisers' nanmean does.
    """
    per_subset: dict[str, list[Detection]] = {}
    for case, counts in detections.items():
        per_subset.setdefault(subsets[case] if subsets is not None else "all", []).append(counts)
    values = {subset: pooled_f1(counts) for subset, counts in sorted(per_subset.items())}
    defined = [v for v in values.values() if not math.isnan(v)]
    return (float(np.mean(defined)) if defined else math.nan), values
