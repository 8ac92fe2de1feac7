"""The per-study metrics of the leaderboard (docs/metrics.md).

Each mask is labelled once with cc3d (18-connectivity), inside its own bounding box, and every
per-component question is answered with one np.bincount or np.unique over labels; no loop over
components touches the whole volume. Overlaps are looked for only where the two boxes meet.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import cc3d
import numpy as np

from petct.boxes import bounding_box
from petct.jsonio import strict
from petct.lesions import LESION_CONNECTIVITY


@dataclass(frozen=True)
class StudyMetrics:
    """Metrics of one study; volumes in ml. NaN marks an undefined value (Dice and FNV of a negative study)."""

    dice: float
    false_positive_volume: float
    false_negative_volume: float
    gt_volume: float
    pred_volume: float
    gt_lesions: int
    detected_lesions: int
    fp_components: int

    @property
    def positive(self) -> bool:
        """Whether the ground truth holds any lesion."""
        return self.gt_lesions > 0

    def to_json(self) -> dict:
        """Strict JSON: undefined values are None (null), never NaN."""
        return strict(asdict(self))

    @classmethod
    def from_json(cls, record: Mapping) -> "StudyMetrics":
        """The metrics of a study record (to_json's, or a record holding them); null becomes NaN."""
        values = {name: record.get(name) for name in cls.__dataclass_fields__}
        return cls(**{name: math.nan if value is None else value for name, value in values.items()})


def score_arrays(*, ground_truth: np.ndarray, prediction: np.ndarray, voxel_volume_ml: float) -> StudyMetrics:
    """Metrics of a binary prediction against a binary ground truth on the same grid.

    Both arrays hold bool or 0/1 values (any other nonzero value counts as lesion) and share a shape;
    `voxel_volume_ml` comes from the ground truth's spacing.
    """
    if ground_truth.shape != prediction.shape:
        raise ValueError(f"shapes differ: ground truth {ground_truth.shape}, prediction {prediction.shape}")
    if ground_truth.ndim != 3:
        raise ValueError(f"expected 3D arrays, got {ground_truth.ndim}D")
    gt, pred, overlap_voxels = match_components(ground_truth=ground_truth, prediction=prediction)
    positive = gt.voxels > 0
    return StudyMetrics(
        dice=2.0 * overlap_voxels / (gt.voxels + pred.voxels) if positive else math.nan,
        false_positive_volume=pred.untouched_voxels * voxel_volume_ml,
        false_negative_volume=gt.untouched_voxels * voxel_volume_ml if positive else math.nan,
        gt_volume=gt.voxels * voxel_volume_ml,
        pred_volume=pred.voxels * voxel_volume_ml,
        gt_lesions=gt.count,
        detected_lesions=int(gt.touched.sum()),
        fp_components=int((~pred.touched).sum()),
    )


def match_components(*, ground_truth: np.ndarray, prediction: np.ndarray) -> tuple["Labelled", "Labelled", int]:
    """Both masks labelled (18-connectivity), each component marked if it touches the other mask; overlap voxels."""
    gt = Labelled.of(_binary_u8(ground_truth))
    pred = Labelled.of(_binary_u8(prediction))
    # A component touches the other mask only where the two boxes meet: count overlaps there alone.
    both = _intersection(gt.box, pred.box)
    if both is None:
        return gt, pred, 0
    gt_labels, pred_labels = gt.labels_in(both), pred.labels_in(both)
    overlap = (gt_labels != 0) & (pred_labels != 0)
    gt.touch(gt_labels[overlap])
    pred.touch(pred_labels[overlap])
    return gt, pred, int(np.count_nonzero(overlap))


Box = tuple[slice, slice, slice]


class Labelled:
    """One mask labelled once inside its bounding box: component sizes and which touch the other mask."""

    def __init__(self, labels: np.ndarray | None, box: Box | None, sizes: np.ndarray):
        self.labels = labels  # component labels inside `box`, 0 = background
        self.box = box
        self.sizes = sizes  # voxels per component; index 0 is component 1
        self.touched = np.zeros(sizes.size, dtype=bool)

    @classmethod
    def of(cls, mask: np.ndarray) -> "Labelled":
        box = bounding_box(mask)
        if box is None:
            return cls(None, None, np.zeros(0, dtype=np.int64))
        crop = np.ascontiguousarray(mask[box])
        labels, count = cc3d.connected_components(crop, connectivity=LESION_CONNECTIVITY, return_N=True)
        sizes = np.bincount(labels[crop.view(np.bool_)], minlength=count + 1)[1:]
        return cls(labels, box, sizes)

    @property
    def count(self) -> int:
        return int(self.sizes.size)

    @property
    def voxels(self) -> int:
        return int(self.sizes.sum())

    @property
    def untouched_voxels(self) -> int:
        return int(self.sizes[~self.touched].sum())

    def labels_in(self, box: Box) -> np.ndarray:
        """The labels inside `box` (which lies within this mask's box), as a view."""
        return self.labels[tuple(slice(b.start - own.start, b.stop - own.start) for b, own in zip(box, self.box))]

    def touch(self, labels: np.ndarray) -> None:
        """Mark the components with these labels as touching the other mask."""
        self.touched[np.unique(labels) - 1] = True


def _binary_u8(mask: np.ndarray) -> np.ndarray:
    """A uint8 0/1 view or copy of a mask; no copy for bool arrays or uint8 arrays already 0/1."""
    if mask.dtype == np.bool_:
        return mask.view(np.uint8)
    if mask.dtype == np.uint8 and (mask.size == 0 or mask.max() <= 1):
        return mask
    return (mask != 0).view(np.uint8)


def _intersection(a: Box | None, b: Box | None) -> Box | None:
    if a is None or b is None:
        return None
    box = tuple(slice(max(x.start, y.start), min(x.stop, y.stop)) for x, y in zip(a, b))
    return None if any(s.start >= s.stop for s in box) else box
