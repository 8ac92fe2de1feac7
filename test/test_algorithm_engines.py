"""Choosing the engine: a model location that is there must be usable; the baseline only when none is there."""
from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from algorithm import engine_choice
from algorithm.baseline import BaselineEngine
from algorithm.engine_contract import EngineOptions
from algorithm.nnunet.selection import ModelChoice, resolve
from petct.errors import InputError

OPTIONS = EngineOptions(device="cpu", folds=(0,), use_mirroring=False)
TRAINER = "nnUNetTrainer__nnUNetPlans__3d_fullres"


@pytest.fixture
def fake_nnunet(monkeypatch):
    """algorithm.nnunet with the real folder selection and no network loading: records what would load."""
    loaded = []

    def load_model(folder, *, options):
        folders = resolve(Path(folder), ModelChoice.of(options))
        loaded.append(([f.path for f in folders], options))
        return SimpleNamespace(name="nnunet", folders=folders)

    monkeypatch.setattr(engine_choice, "_nnunet_module", lambda: SimpleNamespace(load_model=load_model))
    return loaded


def trainer_folder(folder: Path, *, folds=("0",), checkpoint="checkpoint_final.pth", dataset=True) -> Path:
    """plans.json, dataset.json and fold_K/<checkpoint> files (contents never read by the selection)."""
    folder.mkdir(parents=True)
    (folder / "plans.json").write_text("{}")
    if dataset:
        (folder / "dataset.json").write_text("{}")
    for fold in folds:
        (folder / f"fold_{fold}").mkdir()
        if checkpoint:
            (folder / f"fold_{fold}" / checkpoint).write_bytes(b"x")
    return folder


def test_absent_and_empty_locations_fall_back_to_baseline_and_say_why(tmp_path, fake_nnunet, caplog):
    (tmp_path / "empty").mkdir()
    (tmp_path / "hidden-only").mkdir()
    (tmp_path / "hidden-only" / ".DS_Store").write_text("")
    search = [tmp_path / "absent", tmp_path / "empty", tmp_path / "hidden-only"]
    with caplog.at_level(logging.WARNING):
        engine = engine_choice.load_engine(model=None, options=OPTIONS, search=search)
    assert isinstance(engine, BaselineEngine)
    assert fake_nnunet == []
    [record] = [r for r in caplog.records if "baseline" in r.getMessage()]
    for why in ("absent (absent)", "empty (empty)", "hidden-only (empty)"):
        assert why in record.getMessage()
    assert engine.describe()["reason"].startswith("no nnU-Net model found")


@pytest.mark.parametrize("layout, expected", [
    ("fold_all_only", "found only fold_all (a model trained on all cases); pass --folds all"),
    ("two_trainers", "2 trainer folders for this model location"),
    ("fold_folder", "this is a fold folder"),
    ("no_checkpoints", "trainer folder without usable checkpoints: found fold_0 (no .pth file)"),
    ("too_deep", "nested too deep"),
    ("unrelated", "holds no nnU-Net results folder (found README.txt, weights/)"),
    ("only_checkpoints", "found checkpoint(s) fold_0/checkpoint_final.pth but no plans.json"),
    ("no_dataset_json", "has plans.json but no dataset.json"),
])
def test_non_empty_unusable_default_location_is_an_error_not_the_baseline(tmp_path, fake_nnunet, layout, expected):
    location = tmp_path / "opt-ml-model"
    if layout == "fold_all_only":
        trainer_folder(location / "Dataset1_X" / TRAINER, folds=("all",))
    elif layout == "two_trainers":
        trainer_folder(location / TRAINER)
        trainer_folder(location / "nnUNetTrainer__nnUNetResEncUNetMPlans__3d_fullres")
    elif layout == "fold_folder":
        trainer_folder(tmp_path / TRAINER)
        location = tmp_path / TRAINER / "fold_0"
    elif layout == "no_checkpoints":
        trainer_folder(location, checkpoint=None)
    elif layout == "too_deep":
        trainer_folder(location / "nnUNet_results" / "Dataset1_X" / TRAINER)
    elif layout == "unrelated":
        (location / "weights").mkdir(parents=True)
        (location / "README.txt").write_text("my model")
    elif layout == "only_checkpoints":
        (location / "fold_0").mkdir(parents=True)
        (location / "fold_0" / "checkpoint_final.pth").write_bytes(b"x")
        (location / "notes.txt").write_text("")
    elif layout == "no_dataset_json":
        trainer_folder(location, dataset=False)
    baked = trainer_folder(tmp_path / "baked")  # a usable later location does not excuse an unusable first one
    with pytest.raises(InputError) as info:
        engine_choice.load_engine(model=None, options=EngineOptions(device="cpu"), search=[location, baked])
    assert expected in str(info.value)
    assert fake_nnunet == []


def test_error_messages_say_what_to_pass(tmp_path):
    two = tmp_path / "two"
    trainer_folder(two / "Dataset1_X" / TRAINER)
    trainer_folder(two / "Dataset1_X" / "nnUNetTrainer__nnUNetPlans__3d_lowres")
    with pytest.raises(InputError) as info:
        resolve(two, ModelChoice())
    message = str(info.value)
    assert f"Dataset1_X/{TRAINER}" in message and "Dataset1_X/nnUNetTrainer__nnUNetPlans__3d_lowres" in message
    assert "--configuration one of 3d_fullres, 3d_lowres (or several, comma-separated, to ensemble them)" in message
    with pytest.raises(InputError, match="pass --model .*nnUNetPlans__3d_fullres --folds 0$"):
        resolve(two / "Dataset1_X" / TRAINER / "fold_0", ModelChoice())
    with pytest.raises(InputError, match="no trainer folder matches --trainer Other"):
        resolve(two, ModelChoice(trainer="Other"))
    latest = trainer_folder(tmp_path / "latest", checkpoint="checkpoint_latest.pth")
    with pytest.raises(InputError, match=r"fold_0 \(checkpoint_latest.pth\).*pass --checkpoint NAME"):
        resolve(latest, ModelChoice())


def test_choices_select_trainer_folders_folds_and_checkpoints(tmp_path):
    root = tmp_path / "m" / "Dataset1_X"
    full = trainer_folder(root / TRAINER, folds=("0", "1", "all"))
    low = trainer_folder(root / "nnUNetTrainer__nnUNetPlans__3d_lowres", folds=("0", "1"))
    (full / "fold_1" / "checkpoint_best.pth").write_bytes(b"x")

    [one] = resolve(tmp_path / "m", ModelChoice(configurations=("3d_fullres",)))
    assert one.path == full and [c.fold for c in one.checkpoints] == [0, 1]  # fold_all only when asked for
    [one] = resolve(tmp_path / "m", ModelChoice(configurations=("3d_fullres",), folds=("all",)))
    assert [(c.fold, c.path.name) for c in one.checkpoints] == [("all", "checkpoint_final.pth")]
    [one] = resolve(tmp_path / "m", ModelChoice(plans="nnUNetPlans", configurations=("3d_fullres",),
                                               checkpoint="checkpoint_best.pth"))
    assert [(c.fold, c.path.name) for c in one.checkpoints] == [(1, "checkpoint_best.pth")]
    both = resolve(tmp_path / "m", ModelChoice(configurations=("3d_lowres", "3d_fullres"), folds=(0,)))
    assert [f.path for f in both] == [low, full]  # in the order asked for
    with pytest.raises(InputError, match="no trainer folder for configuration '2d'"):
        resolve(tmp_path / "m", ModelChoice(configurations=("3d_fullres", "2d")))
    with pytest.raises(InputError, match=r"fold\(s\) all requested"):
        resolve(tmp_path / "m", ModelChoice(configurations=("3d_lowres",), folds=("all",)))


def test_first_non_empty_location_wins(tmp_path, fake_nnunet):
    first, second = tmp_path / "opt-ml-model", trainer_folder(tmp_path / "baked")
    engine = engine_choice.load_engine(model=None, options=OPTIONS, search=[first, second])
    assert engine.name == "nnunet"
    assert fake_nnunet == [([second], OPTIONS)]
    first.mkdir()
    engine_choice.load_engine(model=None, options=OPTIONS, search=[first, second])  # empty: skipped
    assert fake_nnunet[-1] == ([second], OPTIONS)
    trainer_folder(first / "Dataset1_X" / TRAINER)
    engine_choice.load_engine(model=None, options=OPTIONS, search=[first, second])
    assert fake_nnunet[-1] == ([first / "Dataset1_X" / TRAINER], OPTIONS)


@pytest.mark.parametrize("kind", ["missing", "file", "not_results", "empty"])
def test_explicit_unusable_model_is_an_error(tmp_path, fake_nnunet, kind):
    model = tmp_path / "m"
    if kind == "file":
        model.write_text("weights?")
    elif kind == "not_results":
        model.mkdir()
        (model / "x.txt").write_text("")
    elif kind == "empty":
        model.mkdir()
    expected = {"missing": "does not exist", "file": "must be a folder", "not_results": "holds no nnU-Net results",
                "empty": "holds no nnU-Net results folder"}
    with pytest.raises(InputError, match=expected[kind]) as info:
        engine_choice.load_engine(model=model, options=OPTIONS, search=[trainer_folder(tmp_path / "fallback")])
    assert info.value.path == str(model)
    assert fake_nnunet == []


def test_engine_choice(tmp_path, fake_nnunet):
    model = trainer_folder(tmp_path / "m")
    assert isinstance(engine_choice.load_engine(model=model, options=OPTIONS, engine="baseline"), BaselineEngine)
    with pytest.raises(InputError, match="--engine nnunet but no nnU-Net model found"):
        engine_choice.load_engine(model=None, options=OPTIONS, engine="nnunet", search=[tmp_path / "absent"])
    with pytest.raises(ValueError):
        engine_choice.load_engine(model=None, options=OPTIONS, engine="magic")
    assert fake_nnunet == []


def test_broken_nnunet_install_is_not_a_silent_fallback(tmp_path, monkeypatch):
    def broken():
        raise RuntimeError("the nnU-Net engine cannot be imported: no module named torch")

    monkeypatch.setattr(engine_choice, "_nnunet_module", broken)
    # No model anywhere: the baseline needs no nnU-Net, so a broken install does not matter ...
    assert isinstance(engine_choice.load_engine(model=None, options=OPTIONS, search=[tmp_path / "absent"]), BaselineEngine)
    # ... but a model that is there and cannot be loaded is a failure.
    with pytest.raises(RuntimeError, match="cannot be imported"):
        engine_choice.load_engine(model=None, options=OPTIONS, search=[trainer_folder(tmp_path / "m")])
