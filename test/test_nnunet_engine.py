"""NnUNetEngine behaviour: model folder discovery, clear errors, channel order, time budget, outputs."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time

import numpy as np
import pytest
import torch

from algorithm.engine_contract import EngineOptions
from algorithm.nnunet import NnUNetEngine, is_results_folder
from algorithm.nnunet.budget import Schedule, choose_schedule
from nnunet_helpers import make_dataset_json, require_nnunetv2
from petct.errors import InputError
from petct.jsonio import dumps

require_nnunetv2()
torch.set_num_threads(2)

CPU = EngineOptions(device="cpu", use_mirroring=False)


@pytest.fixture(scope="module")
def study(nnunet_case):
    return nnunet_case.suv, nnunet_case.ct, nnunet_case.spacing


@pytest.fixture(scope="module")
def model(nnunet_case):
    return nnunet_case.trainer_folder


def _copy(model, tmp_path, name="copy"):
    target = tmp_path / name
    shutil.copytree(model, target)
    return target


def test_results_folder_found_directly_and_nested(model):
    assert is_results_folder(model)
    assert is_results_folder(model.parent)  # Dataset999_KitTest/
    assert is_results_folder(model.parent.parent)  # the folder holding it


def test_results_folder_rejects_incomplete_and_ambiguous(model, tmp_path):
    copy = _copy(model, tmp_path)
    for ckpt in copy.glob("fold_*/checkpoint_final.pth"):
        ckpt.rename(ckpt.with_name("checkpoint_best.pth"))
    assert is_results_folder(copy)  # checkpoint_best.pth is accepted
    shutil.copytree(copy, tmp_path / "second")
    assert not is_results_folder(tmp_path)  # two trainer folders: ambiguous
    (copy / "plans.json").unlink()
    assert not is_results_folder(copy)
    assert not is_results_folder(tmp_path / "missing")


def test_missing_plans_is_an_input_error_naming_the_folder(model, tmp_path):
    copy = _copy(model, tmp_path)
    (copy / "plans.json").unlink()
    with pytest.raises(InputError, match="missing plans.json") as info:
        NnUNetEngine.from_folder(copy, options=CPU)
    assert str(copy) in str(info.value)


def test_corrupt_checkpoint_is_an_input_error_naming_it(model, tmp_path):
    copy = _copy(model, tmp_path)
    (copy / "fold_1" / "checkpoint_final.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="cannot load checkpoint") as info:
        NnUNetEngine.from_folder(copy, options=CPU)
    assert "fold_1" in str(info.value)


def test_weights_that_do_not_fit_the_plan_are_an_input_error(model, tmp_path):
    copy = _copy(model, tmp_path)
    plans = json.loads((copy / "plans.json").read_text())
    plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["features_per_stage"] = [8, 16, 48]
    (copy / "plans.json").write_text(json.dumps(plans))
    with pytest.raises(InputError, match="weights do not fit") as info:
        NnUNetEngine.from_folder(copy, options=CPU)
    assert "checkpoint_final.pth" in str(info.value)


def test_unsupported_network_class_and_missing_fold_are_input_errors(model, tmp_path):
    with pytest.raises(InputError, match=r"fold\(s\) 3 requested"):
        NnUNetEngine.from_folder(model, options=EngineOptions(device="cpu", folds=(0, 3)))
    copy = _copy(model, tmp_path)
    plans = json.loads((copy / "plans.json").read_text())
    plans["configurations"]["3d_fullres"]["architecture"]["network_class_name"] = "my.package.MyUNet"
    (copy / "plans.json").write_text(json.dumps(plans))
    with pytest.raises(InputError, match="unsupported network class") as info:
        NnUNetEngine.from_folder(copy, options=CPU)
    assert "plans.json" in str(info.value)


def test_checkpoint_loads_without_full_unpickling(model):
    engine = NnUNetEngine.from_folder(model, options=CPU)
    described = engine.describe()
    assert described["checkpoint_loading"] == "weights_only"
    assert described["folds"] == [0, 1]
    assert described["channels"] == ["ct (CT)", "pet (PET)"]
    json.loads(dumps(described))  # the service can serve it as JSON


def test_prediction_shapes_and_consistency(model, study):
    pet, ct, spacing = study
    result = NnUNetEngine.from_folder(model, options=CPU).predict(pet=pet, ct=ct, spacing_zyx=spacing)
    assert result.mask.shape == pet.shape and result.mask.dtype == np.uint8
    assert result.probabilities.shape == pet.shape and result.probabilities.dtype == np.float32
    assert set(np.unique(result.mask)) <= {0, 1} and 0 < result.mask.mean() < 1
    assert result.probabilities.min() >= 0 and result.probabilities.max() <= 1
    # Two classes: argmax is lesion exactly where its probability wins.
    decided = np.abs(result.probabilities - 0.5) > 1e-6
    assert np.array_equal(result.mask[decided], (result.probabilities > 0.5)[decided])
    assert {"upload", "preprocess", "network", "postprocess", "total"} <= set(result.timings)
    with pytest.raises(InputError, match="same shape"):
        NnUNetEngine.from_folder(model, options=CPU).predict(pet=pet, ct=ct[:-1], spacing_zyx=spacing)


def test_ambiguous_channel_names_need_an_explicit_order(model, study, tmp_path):
    pet, ct, spacing = study
    baseline = NnUNetEngine.from_folder(model, options=CPU).predict(pet=pet, ct=ct, spacing_zyx=spacing)
    copy = _copy(model, tmp_path)
    (copy / "dataset.json").write_text(json.dumps(make_dataset_json(("CT", "CT"))))
    with pytest.raises(InputError, match="kit.json") as info:
        NnUNetEngine.from_folder(copy, options=CPU)
    assert "dataset.json" in str(info.value)
    (copy / "kit.json").write_text(json.dumps({"channel_order": ["ct", "pet"]}))
    from_settings = NnUNetEngine.from_folder(copy, options=CPU).predict(pet=pet, ct=ct, spacing_zyx=spacing)
    assert np.array_equal(from_settings.probabilities, baseline.probabilities)
    # The command line wins over kit.json; the swapped order feeds PET where CT was trained: a different answer.
    swapped = NnUNetEngine.from_folder(copy, options=EngineOptions(device="cpu", use_mirroring=False,
                                                                     channel_order=("pet", "ct")))
    assert swapped.describe()["channel_order_from"] == "the command line"
    other = swapped.predict(pet=pet, ct=ct, spacing_zyx=spacing)
    assert not np.array_equal(other.probabilities, baseline.probabilities)
    with pytest.raises(InputError, match="channel order"):
        NnUNetEngine.from_folder(copy, options=EngineOptions(device="cpu", channel_order=("pet",)))


def test_tiny_time_budget_drops_mirroring_then_folds(model, study):
    pet, ct, spacing = study
    engine = NnUNetEngine.from_folder(model, options=EngineOptions(device="cpu", time_budget_s=1e-3))
    result = engine.predict(pet=pet, ct=ct, spacing_zyx=spacing)
    assert result.notes["folds_run"] == [0]
    assert result.notes["mirroring_passes_per_tile"] == 1
    assert result.notes["dropped_for_time_budget"] == ["folds [1]", "mirroring over axes [0, 1, 2]"]
    generous = NnUNetEngine.from_folder(model, options=EngineOptions(device="cpu", time_budget_s=1e6))
    full = generous.predict(pet=pet, ct=ct, spacing_zyx=spacing)
    assert full.notes["folds_run"] == [0, 1] and full.notes["mirroring_passes_per_tile"] == 8
    assert "dropped_for_time_budget" not in full.notes


def test_schedule_drops_mirror_axes_before_folds():
    full = dict(tiles=10, folds=5, mirror_axes=(0, 1, 2))
    assert choose_schedule(seconds_left=None, seconds_per_tile_pass=1.0, **full) == Schedule(5, (0, 1, 2))
    assert choose_schedule(seconds_left=400, seconds_per_tile_pass=1.0, **full) == Schedule(5, (0, 1, 2))
    assert choose_schedule(seconds_left=399, seconds_per_tile_pass=1.0, **full) == Schedule(5, (0, 1))
    assert choose_schedule(seconds_left=100, seconds_per_tile_pass=1.0, **full) == Schedule(5, (0,))
    assert choose_schedule(seconds_left=50, seconds_per_tile_pass=1.0, **full) == Schedule(5, ())
    assert choose_schedule(seconds_left=49, seconds_per_tile_pass=1.0, **full) == Schedule(4, ())
    assert choose_schedule(seconds_left=0, seconds_per_tile_pass=1.0, **full) == Schedule(1, ())


def test_cuda_request_without_gpu_is_an_input_error(model):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(InputError, match="CUDA is not available"):
        NnUNetEngine.from_folder(model, options=EngineOptions(device="cuda"))


def test_probabilities_only_when_asked_for(model, study):
    pet, ct, spacing = study
    one_fold = EngineOptions(device="cpu", folds=(0,), use_mirroring=False)
    with_map = NnUNetEngine.from_folder(model, options=one_fold).predict(pet=pet, ct=ct, spacing_zyx=spacing)
    lean = NnUNetEngine.from_folder(model, options=dataclasses.replace(one_fold, probabilities=False))
    without = lean.predict(pet=pet, ct=ct, spacing_zyx=spacing)
    assert without.probabilities is None and with_map.probabilities is not None
    np.testing.assert_array_equal(without.mask, with_map.mask)


def test_time_budget_counts_from_the_clock_start(model, study):
    """A budget already spent before prediction (model loading, reading) leaves one fold without mirroring."""
    pet, ct, spacing = study
    generous = 1e5
    options = EngineOptions(device="cpu", time_budget_s=generous, clock_start=time.perf_counter() - generous)
    result = NnUNetEngine.from_folder(model, options=options).predict(pet=pet, ct=ct, spacing_zyx=spacing)
    assert result.notes["folds_run"] == [0] and result.notes["mirroring_passes_per_tile"] == 1
    assert result.notes["budget_s_left_for_network"] < 0


def test_input_beyond_float32_arithmetic_is_an_input_error(model, study):
    """Finite but absurd SUVs whose z-score overflows float32 must not become a silent, meaningless mask."""
    pet, ct, spacing = study
    huge = np.where(pet > 3, 3.4e38, -3.4e38).astype(np.float32)
    with pytest.raises(InputError, match="NaN or infinite values after .* normalisation"):
        NnUNetEngine.from_folder(model, options=CPU).predict(pet=huge, ct=ct, spacing_zyx=spacing)


def test_jit_and_compiler_caches_go_to_the_temp_folder(model, monkeypatch, tmp_path):
    """Nothing may be written under $HOME on the platform: CUDA, inductor and Triton caches live in TMPDIR."""
    from algorithm.nnunet.engine import CACHE_ENVIRONMENT

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    for name in CACHE_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TRITON_CACHE_DIR", "/somewhere/chosen")  # a user's own choice is kept
    NnUNetEngine.from_folder(model, options=CPU)
    assert os.environ["CUDA_CACHE_PATH"].startswith(str(tmp_path))
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"].startswith(str(tmp_path))
    assert os.environ["TRITON_CACHE_DIR"] == "/somewhere/chosen"
