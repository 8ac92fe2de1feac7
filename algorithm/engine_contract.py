"""What every segmentation engine offers, and the settings a user can give it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from petct.clicks import ClickEncoding, Clicks


@dataclass(frozen=True)
class EngineOptions:
    """Settings from the command line (or the service) that an engine honours where they apply."""

    device: str = "auto"  # auto | cuda | cpu
    folds: tuple[int | str, ...] | None = None  # None: every fold_K found; "all" is nnU-Net's fold_all
    checkpoint: str | None = None  # checkpoint file in each fold folder; None: checkpoint_final, else _best
    # Which trainer folder(s) of the model location, as nnUNetv2_predict's -tr, -p, -c; several configurations
    # are ensembled. None: the only one there is.
    trainer: str | None = None
    plans: str | None = None
    configurations: tuple[str, ...] | None = None
    use_mirroring: bool = True
    step_size: float = 0.5
    time_budget_s: float | None = None  # seconds for the whole run, counted from `clock_start`
    clock_start: float | None = None  # time.perf_counter() when the budget's clock started; None: at predict
    channel_order: tuple[str, ...] | None = None  # e.g. ("ct", "pet"); None: from dataset.json / settings file
    compile: bool = False
    # Also return the lesion probability map: a full-volume float32 on the device and on the host, so the
    # container asks for it only with --save-probabilities.
    probabilities: bool = True
    # How a model's click channels encode the points when its kit.json does not say: the edition's rule
    # (2026 scribbles: impulses); None: the 2025 baseline's Gaussian.
    click_encoding: ClickEncoding | None = None


@dataclass
class Prediction:
    """An engine's answer for one study on the PET grid, (z, y, x)."""

    mask: np.ndarray  # uint8, values in {0, 1}
    probabilities: np.ndarray | None = None  # float32 lesion probability, when the engine has one
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    notes: dict[str, object] = field(default_factory=dict)  # e.g. folds and mirroring passes actually run


class Engine(Protocol):
    name: str

    def describe(self) -> dict[str, object]:
        """Engine, device, model and settings, for logs and the service's /readyz."""

    def predict(self, *, pet: np.ndarray, ct: np.ndarray, spacing_zyx: tuple[float, float, float],
                clicks: Clicks | None = None) -> Prediction:
        """Segment one study: SUV and CT float32 arrays (z, y, x) on the same grid; clicks in the 2025 profile."""
