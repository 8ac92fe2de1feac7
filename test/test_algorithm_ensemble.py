"""Ensembling configurations (--configuration A,B) against nnU-Net's own: mean of the configurations' probabilities."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from algorithm.engine_contract import EngineOptions
from algorithm.nnunet import EnsembleEngine, NnUNetEngine, load_model
from nnunet_helpers import (
    CONFIGURATION,
    dice,
    make_dataset_json,
    make_plans,
    plain_architecture,
    reference_prediction,
    require_nnunetv2,
    study_arrays,
    write_results_folder,
)
from petct.errors import InputError

require_nnunetv2()
torch.set_num_threads(2)

LOWRES = "3d_lowres"
NEAR_TIE = 0.005


def _set_configuration(folder, configuration: str) -> None:
    """Rewrite the checkpoints' init_args as nnU-Net's trainer writes them for another configuration."""
    for path in folder.glob("fold_*/checkpoint_final.pth"):
        checkpoint = torch.load(path, weights_only=False)
        checkpoint["init_args"]["configuration"] = configuration
        torch.save(checkpoint, path)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ensemble")
    study = study_arrays(51, (32, 32, 24))
    plans = make_plans(plain_architecture(), patch_size=(16, 16, 16), spacing=list(study[2]))
    # A second configuration at a coarser spacing, in the same plans.json, as nnU-Net plans 3d_lowres.
    lowres = copy.deepcopy(plans["configurations"][CONFIGURATION])
    lowres["spacing"] = [s * 1.5 for s in study[2]]
    lowres["data_identifier"] = "nnUNetPlans_3d_lowres"
    plans["configurations"][LOWRES] = lowres
    model = root / "model" / "Dataset999_KitTest"
    full = write_results_folder(model / f"nnUNetTrainer__nnUNetPlans__{CONFIGURATION}", plans=plans,
                                dataset=make_dataset_json(), folds=(0, 1), seed=1, calibration_study=study)
    low = write_results_folder(model / f"nnUNetTrainer__nnUNetPlans__{LOWRES}", plans=plans,
                               dataset=make_dataset_json(), folds=(0, 1), seed=2, calibration_study=study)
    _set_configuration(low, LOWRES)
    return {"root": root, "model": root / "model", "full": full, "low": low, "study": study}


@pytest.mark.slow
def test_ensemble_matches_nnunet_mean_of_probabilities(setup):
    pet, ct, spacing = setup["study"]
    options = EngineOptions(device="cpu", use_mirroring=False, configurations=(CONFIGURATION, LOWRES),
                            probabilities=True)
    engine = load_model(setup["model"], options=options)
    assert isinstance(engine, EnsembleEngine)
    assert [m.plan.configuration for m in engine.members] == [CONFIGURATION, LOWRES]
    prediction = engine.predict(pet=pet, ct=ct, spacing_zyx=spacing)

    references = [reference_prediction(folder, pet=pet, ct=ct, spacing_zyx=spacing, use_mirroring=False)
                  for folder in (setup["full"], setup["low"])]
    mean = (references[0][1] + references[1][1]) / 2
    expected = (mean > 0.5).astype(np.uint8)
    assert 0.01 < expected.mean() < 0.9
    assert not np.array_equal(references[0][0], references[1][0])  # the two configurations disagree somewhere
    assert np.abs(prediction.probabilities - mean).max() <= 1e-3
    decided = np.abs(mean - 0.5) >= NEAR_TIE
    assert np.array_equal(prediction.mask[decided], expected[decided])
    assert dice(prediction.mask, expected) >= 0.99
    described = engine.describe()
    assert described["configurations"] == [CONFIGURATION, LOWRES] and len(described["members"]) == 2


def test_one_configuration_of_several_is_a_single_engine(setup):
    engine = load_model(setup["model"], options=EngineOptions(device="cpu", configurations=(LOWRES,), folds=(1,)))
    assert isinstance(engine, NnUNetEngine)
    assert engine.plan.configuration == LOWRES and [f.fold for f in engine.folds] == [1]
    with pytest.raises(InputError, match="--configuration one of 3d_fullres, 3d_lowres"):
        load_model(setup["model"], options=EngineOptions(device="cpu"))
