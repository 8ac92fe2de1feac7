"""Fixtures shared by the test modules: the small random-weight nnU-Net model, built once per test run."""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

TRAINER = "nnUNetTrainer__nnUNetPlans__3d_fullres"


@dataclass(frozen=True)
class NnUNetCase:
    """Phantom study 21 (24x24x20) and a 2-fold random-weight results folder calibrated on it; read-only to tests."""

    study: object  # petct.phantom.Study
    model: Path  # the folder holding Dataset999_KitTest/<TRAINER>/
    suv: np.ndarray
    ct: np.ndarray
    spacing: tuple[float, float, float]

    @property
    def trainer_folder(self) -> Path:
        return self.model / "Dataset999_KitTest" / TRAINER

    def copy_model(self, target: Path) -> Path:
        """A writable copy of the model folder at `target` (tests that change a model change their copy)."""
        shutil.copytree(self.model, target)
        return target


@pytest.fixture(scope="session")
def nnunet_case(tmp_path_factory) -> NnUNetCase:
    from nnunet_helpers import require_nnunetv2, small_model_case

    require_nnunetv2()
    made = small_model_case(tmp_path_factory.mktemp("nnunet-case"))
    return NnUNetCase(study=made["study"], model=made["model"], suv=made["suv"], ct=made["ct"],
                      spacing=made["spacing"])
