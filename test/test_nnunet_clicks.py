"""A 4-channel nnU-Net (CT, PET and two click heatmaps, as the 2025 baseline) run with clicks, against nnunetv2.

The random-weight model is written in nnU-Net's on-disk format (test/nnunet_helpers.py); nnunetv2's own
nnUNetPredictor gets the same four channels, the heatmaps made by petct.clicks.click_channels.
"""
from __future__ import annotations

import json

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
    require_nnunetv2,
    study_arrays,
    write_results_folder,
)
from petct.clicks import ClickEncoding, Clicks, click_channels
from petct.errors import InputError

require_nnunetv2()
pytestmark = pytest.mark.slow  # runs nnunetv2's own predictor as the reference
torch.set_num_threads(2)

PATCH = (24, 32, 32)


@pytest.fixture(scope="module")
def study():
    return study_arrays(3, (48, 48, 32))


@pytest.fixture(scope="module")
def clicks_folder(tmp_path_factory, study):
    plans = make_plans(plain_architecture(), patch_size=PATCH, spacing=list(study[2]),
                       normalization=("CTNormalization", "ZScoreNormalization", "NoNormalization", "NoNormalization"))
    # nnU-Net's fingerprint records every channel, the heatmaps too
    for channel in ("2", "3"):
        plans["foreground_intensity_properties_per_channel"][channel] = {
            "max": 1.0, "mean": 0.01, "median": 0.0, "min": 0.0, "percentile_00_5": 0.0, "percentile_99_5": 0.1,
            "std": 0.05}
    return write_results_folder(tmp_path_factory.mktemp("clicks"), plans=plans, folds=(0,), gain=3.0,
                                dataset=make_dataset_json(("CT", "PET", "FG", "BG")))


def reference(folder, channels, spacing):
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                perform_everything_on_device=False, device=torch.device("cpu"), verbose=False,
                                verbose_preprocessing=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(folder), use_folds=(0,), checkpoint_name="checkpoint_final.pth")
    seg, probs = predictor.predict_single_npy_array(np.stack(channels).astype(np.float32),
                                                    {"spacing": list(spacing)}, None, None, True)
    return seg.astype(np.uint8), probs[1].astype(np.float32)


@pytest.mark.parametrize("encoding", [None, {"kind": "distance", "max_distance": 6}])
def test_four_channel_model_with_clicks_matches_nnunet(clicks_folder, study, encoding):
    pet, ct, spacing = study
    if encoding is None:
        (clicks_folder / "kit.json").unlink(missing_ok=True)
    else:
        (clicks_folder / "kit.json").write_text(json.dumps({"click_encoding": encoding}))
    clicks = Clicks(tumor=((20, 20, 10), (30, 25, 16)), background=((10, 30, 5),))
    engine = NnUNetEngine.from_folder(clicks_folder, options=EngineOptions(device="cpu", use_mirroring=False))
    assert engine.channel_roles == ("ct", "pet", "tumor_clicks", "background_clicks")
    ours = engine.predict(pet=pet, ct=ct, spacing_zyx=spacing, clicks=clicks)
    tumour, background = click_channels(clicks, pet.shape, ClickEncoding(**(encoding or {})))
    ref_mask, ref_prob = reference(clicks_folder, [ct, pet, tumour, background], spacing)
    assert ref_prob.std() > 1e-2
    assert np.abs(ours.probabilities - ref_prob).max() <= 1e-3
    assert dice(ours.mask, ref_mask) >= 0.99
    # The clicks reach the network: without them the answer differs.
    without = engine.predict(pet=pet, ct=ct, spacing_zyx=spacing)
    assert np.abs(without.probabilities - ours.probabilities).max() > 1e-3


def test_bad_click_encoding_names_kit_json(clicks_folder):
    (clicks_folder / "kit.json").write_text(json.dumps({"click_encoding": {"kind": "voronoi"}}))
    try:
        with pytest.raises(InputError, match="kit.json"):
            NnUNetEngine.from_folder(clicks_folder, options=EngineOptions(device="cpu"))
    finally:
        (clicks_folder / "kit.json").unlink()


def test_ensemble_passes_the_clicks_to_every_member(clicks_folder, study):
    """A configuration ensemble of click models (2025 profile): the mean of its members' predictions with clicks."""
    from algorithm.nnunet import EnsembleEngine

    (clicks_folder / "kit.json").unlink(missing_ok=True)
    pet, ct, spacing = study
    clicks = Clicks(tumor=((20, 20, 10),), background=((10, 30, 5), (40, 10, 20)))
    options = EngineOptions(device="cpu", use_mirroring=False, probabilities=True)
    members = [NnUNetEngine.from_folder(clicks_folder, options=options) for _ in range(2)]
    ensemble = EnsembleEngine(members=members, options=options)
    single = NnUNetEngine.from_folder(clicks_folder, options=options)
    expected = single.predict(pet=pet, ct=ct, spacing_zyx=spacing, clicks=clicks).probabilities
    ours = ensemble.predict(pet=pet, ct=ct, spacing_zyx=spacing, clicks=clicks)
    assert np.abs(ours.probabilities - expected).max() <= 1e-5
    without = ensemble.predict(pet=pet, ct=ct, spacing_zyx=spacing)
    assert np.abs(without.probabilities - ours.probabilities).max() > 1e-3
