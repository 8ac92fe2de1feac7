"""Several configurations as one engine: their class probabilities averaged, as `nnUNetv2_ensemble` does.

nnU-Net ensembles configurations after each has made its own prediction: every configuration's softmax
probabilities (its folds' logits averaged first, then resampled back to the image) are summed, divided by
their number, and the segmentation is the argmax of that average. With background plus one lesion class
the argmax is "lesion where the mean lesion probability beats the mean background probability"; a tie
goes to background, as argmax's first index does.
"""
from __future__ import annotations

import time

import numpy as np

from algorithm.engine_contract import EngineOptions, Prediction
from algorithm.nnunet.engine import NnUNetEngine
from petct.clicks import Clicks
from petct.errors import InputError


class EnsembleEngine:
    """Runs each member on the study and averages their probabilities."""

    name = "nnunet"

    def __init__(self, *, members: list[NnUNetEngine], options: EngineOptions):
        for member in members:
            if member.plan.num_classes != 2:
                raise InputError(f"ensembling needs background plus one lesion class; configuration "
                                 f"{member.plan.configuration!r} has {member.plan.num_classes} classes",
                                 path=member.folder)
        self.members = members
        self.options = options

    def describe(self) -> dict[str, object]:
        first = self.members[0].describe()
        return {"engine": self.name, "device": first["device"], "ensemble": "mean of class probabilities",
                "configurations": [m.plan.configuration for m in self.members],
                "members": [m.describe() for m in self.members]}

    def predict(self, *, pet: np.ndarray, ct: np.ndarray, spacing_zyx: tuple[float, float, float],
                clicks: Clicks | None = None) -> Prediction:
        """Each member sees the same clicks (2025 profile); a member without click channels ignores them."""
        start = time.perf_counter()
        total: np.ndarray | None = None
        timings: dict[str, float] = {}
        notes: dict[str, object] = {}
        for member in self.members:
            prediction = member.predict(pet=pet, ct=ct, spacing_zyx=spacing_zyx, clicks=clicks)
            lesion = prediction.probabilities.astype(np.float32, copy=False)
            # Summed in configuration order and divided once, as nnU-Net's average_probabilities does.
            total = lesion.copy() if total is None else total + lesion
            key = member.plan.configuration
            timings.update({f"{key}/{k}": v for k, v in prediction.timings.items()})
            notes[key] = prediction.notes
        count = np.float32(len(self.members))
        lesion_mean = total / count
        background_mean = (count - total) / count  # each member's background probability is 1 - lesion
        mask = (lesion_mean > background_mean).astype(np.uint8)
        timings["total"] = time.perf_counter() - start
        return Prediction(mask=mask, probabilities=lesion_mean if self.options.probabilities else None,
                          timings=timings, notes={"ensemble": notes})
