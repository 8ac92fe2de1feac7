"""The nnU-Net engine against nnunetv2's own nnUNetPredictor on the same results folder and study.

Random-weight models are written in nnU-Net's exact on-disk format with nnunetv2's network classes
(test/nnunet_helpers.py); nnunetv2 is a test-only dependency. Bars: lesion probabilities within
1e-3 everywhere, masks identical wherever nnU-Net's probability is at least 0.005 from 0.5, Dice >= 0.99.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from algorithm.engine_contract import EngineOptions
from algorithm.nnunet import NnUNetEngine
from nnunet_helpers import (
    dice,
    make_dataset_json,
    make_plans,
    plain_architecture,
    reference_prediction,
    require_nnunetv2,
    resenc_architecture,
    study_arrays,
    write_results_folder,
)

require_nnunetv2()
pytestmark = pytest.mark.slow  # runs nnunetv2's own predictor as the reference
torch.set_num_threads(2)

PATCH = (24, 32, 32)
STUDY_SIZE_XYZ = (48, 48, 32)
PROBABILITY_TOLERANCE = 1e-3
CONFIDENT_MARGIN = 0.005


@pytest.fixture(scope="module")
def study():
    return study_arrays(3, STUDY_SIZE_XYZ)


@pytest.fixture(scope="module")
def framed_study(study):
    """The study with zeros in both channels along two borders: nnU-Net crops them away and pads them back."""
    pet, ct, spacing = (np.array(a) if isinstance(a, np.ndarray) else a for a in study)
    for a in (pet, ct):
        a[:3] = 0
        a[:, :, -5:] = 0
    return pet, ct, spacing


def _folder(tmp_path_factory, name: str, architecture: dict, spacing, study, mirror_axes, transpose=(0, 1, 2)):
    plans = make_plans(architecture, patch_size=PATCH, spacing=list(spacing))
    plans["transpose_forward"] = list(transpose)
    plans["transpose_backward"] = [int(i) for i in np.argsort(transpose)]
    return write_results_folder(tmp_path_factory.mktemp(name), plans=plans, dataset=make_dataset_json(),
                                folds=(0, 1), calibration_study=study, mirror_axes=mirror_axes)


@pytest.fixture(scope="module")
def plain_folder(tmp_path_factory, study):
    return _folder(tmp_path_factory, "plain", plain_architecture(), study[2], study, (0, 1, 2))


@pytest.fixture(scope="module")
def resenc_folder(tmp_path_factory, study):
    return _folder(tmp_path_factory, "resenc", resenc_architecture(), study[2], study, (1, 2))


@pytest.fixture(scope="module")
def resampling_folder(tmp_path_factory, framed_study):
    # Coarser along z by more than 3x the in-plane spacing: nnU-Net resamples z on its own (separate-z path).
    z, y, x = framed_study[2]
    return _folder(tmp_path_factory, "resampling", plain_architecture(), (z * 1.25, y * 0.6, x * 0.7),
                   framed_study, (0, 1, 2))


@pytest.fixture(scope="module")
def transposed_folder(tmp_path_factory, framed_study):
    # A plan whose axes are transposed (x, z, y): spacing and patch are given in that order.
    transpose = (2, 0, 1)
    spacing = tuple(framed_study[2][a] for a in transpose)
    return _folder(tmp_path_factory, "transposed", plain_architecture(), spacing, framed_study, (0,),
                   transpose=transpose)


def _compare(folder, study, *, folds, use_mirroring, step_size=0.5):
    pet, ct, spacing = study
    engine = NnUNetEngine.from_folder(folder, options=EngineOptions(device="cpu", folds=folds, step_size=step_size,
                                                                    use_mirroring=use_mirroring))
    ours = engine.predict(pet=pet, ct=ct, spacing_zyx=spacing)
    ref_mask, ref_prob = reference_prediction(folder, pet=pet, ct=ct, spacing_zyx=spacing, folds=folds,
                                              use_mirroring=use_mirroring, step_size=step_size)
    assert ours.mask.shape == ref_mask.shape == pet.shape
    assert ours.mask.dtype == np.uint8 and ours.probabilities.dtype == np.float32
    # Both classes present and probabilities spread well beyond the tolerance, or agreement would be trivial.
    assert 0.005 < ref_mask.mean() < 0.95
    assert ref_prob.std() > 10 * PROBABILITY_TOLERANCE
    assert np.abs(ours.probabilities - ref_prob).max() <= PROBABILITY_TOLERANCE
    confident = np.abs(ref_prob - 0.5) >= CONFIDENT_MARGIN
    assert confident.mean() > 0.5  # the exact-mask bar must cover most of the study
    assert np.array_equal(ours.mask[confident], ref_mask[confident])
    assert dice(ours.mask, ref_mask) >= 0.99
    assert ours.notes["folds_run"] == list(folds)
    return ours


def test_plain_unet_two_folds_with_mirroring(plain_folder, study):
    ours = _compare(plain_folder, study, folds=(0, 1), use_mirroring=True)
    assert ours.notes["mirroring_passes_per_tile"] == 8
    assert ours.notes["resampled"] is False


def test_plain_unet_one_fold_without_mirroring(plain_folder, study):
    ours = _compare(plain_folder, study, folds=(1,), use_mirroring=False)
    assert ours.notes["mirroring_passes_per_tile"] == 1


def test_residual_encoder_unet_two_folds_with_checkpoint_mirror_axes(resenc_folder, study):
    ours = _compare(resenc_folder, study, folds=(0, 1), use_mirroring=True)
    assert ours.notes["mirror_axes"] == [1, 2]
    assert ours.notes["mirroring_passes_per_tile"] == 4


def test_plain_unet_other_step_size(plain_folder, study):
    ours = _compare(plain_folder, study, folds=(0,), use_mirroring=False, step_size=0.3)
    assert ours.notes["tiles"] == 27  # three tiles per axis instead of the default step's two


def test_spacing_different_from_plan_is_resampled_both_ways(resampling_folder, framed_study):
    ours = _compare(resampling_folder, framed_study, folds=(0, 1), use_mirroring=False)
    assert ours.notes["resampled"] is True


def test_transposed_plan_and_cropped_borders(transposed_folder, framed_study):
    ours = _compare(transposed_folder, framed_study, folds=(1,), use_mirroring=True)
    assert ours.notes["resampled"] is False and ours.notes["mirroring_passes_per_tile"] == 2
    # Outside the non-zero box nnU-Net's answer is background with lesion probability 0; so is ours.
    assert not ours.mask[:3].any() and not ours.probabilities[:, :, -5:].any()
