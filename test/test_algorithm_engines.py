"""Choosing the engine: an nnU-Net model where one is found, else the baseline, logged; named models must work."""
from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from algorithm import engines
from algorithm.baseline import BaselineEngine
from algorithm.engine import EngineOptions
from petct.errors import InputError

OPTIONS = EngineOptions(device="cpu", folds=(0,), use_mirroring=False)


@pytest.fixture
def fake_nnunet(monkeypatch):
    """Stands in for algorithm.nnunet: a results folder is any folder holding a file named plans.json."""
    loaded = []

    class FakeEngine:
        name = "nnunet"

        @classmethod
        def from_folder(cls, folder, *, options):
            loaded.append((Path(folder), options))
            return cls()

    module = SimpleNamespace(is_results_folder=lambda p: (Path(p) / "plans.json").is_file(), NnUNetEngine=FakeEngine)
    monkeypatch.setattr(engines, "_nnunet_module", lambda: module)
    return loaded


def _model(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "plans.json").write_text("{}")
    return folder


def test_nothing_found_falls_back_to_baseline_and_says_why(tmp_path, fake_nnunet, caplog):
    (tmp_path / "empty").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "README").write_text("not a model")
    search = [tmp_path / "absent", tmp_path / "empty", tmp_path / "other"]
    with caplog.at_level(logging.WARNING):
        engine = engines.load_engine(model=None, options=OPTIONS, search=search)
    assert isinstance(engine, BaselineEngine)
    assert fake_nnunet == []
    [record] = [r for r in caplog.records if "falling back" in r.getMessage()]
    message = record.getMessage()
    for why in ("absent)", "(empty)", "(holds no nnU-Net results folder)"):
        assert why in message
    assert engine.describe()["reason"].startswith("no nnU-Net model found")


def test_first_location_with_a_model_wins(tmp_path, fake_nnunet):
    first, second = tmp_path / "opt-ml-model", _model(tmp_path / "baked")
    engine = engines.load_engine(model=None, options=OPTIONS, search=[first, second])
    assert engine.name == "nnunet"
    assert fake_nnunet == [(second, OPTIONS)]
    _model(first)
    engines.load_engine(model=None, options=OPTIONS, search=[first, second])
    assert fake_nnunet[-1] == (first, OPTIONS)


def test_explicit_model_is_used(tmp_path, fake_nnunet):
    model = _model(tmp_path / "m")
    assert engines.load_engine(model=model, options=OPTIONS, search=[]).name == "nnunet"
    assert fake_nnunet == [(model, OPTIONS)]


@pytest.mark.parametrize("kind", ["missing", "file", "not_results"])
def test_explicit_unusable_model_is_an_error(tmp_path, fake_nnunet, kind):
    model = tmp_path / "m"
    if kind == "file":
        model.write_text("weights?")
    elif kind == "not_results":
        model.mkdir()
    expected = {"missing": "does not exist", "file": "must be a folder", "not_results": "not an nnU-Net results folder"}
    with pytest.raises(InputError, match=expected[kind]) as info:
        engines.load_engine(model=model, options=OPTIONS, search=[_model(tmp_path / "fallback")])
    assert info.value.path == str(model)
    assert fake_nnunet == []


def test_engine_choice(tmp_path, fake_nnunet):
    model = _model(tmp_path / "m")
    assert isinstance(engines.load_engine(model=model, options=OPTIONS, engine="baseline"), BaselineEngine)
    with pytest.raises(InputError, match="--engine nnunet but no nnU-Net model found"):
        engines.load_engine(model=None, options=OPTIONS, engine="nnunet", search=[tmp_path / "absent"])
    with pytest.raises(ValueError):
        engines.load_engine(model=None, options=OPTIONS, engine="magic")
    assert fake_nnunet == []


def test_broken_nnunet_install_is_not_a_silent_fallback(tmp_path, monkeypatch):
    def broken():
        raise RuntimeError("the nnU-Net engine cannot be imported: no module named torch")

    monkeypatch.setattr(engines, "_nnunet_module", broken)
    # No model anywhere: the baseline needs no nnU-Net, so a broken install does not matter ...
    assert isinstance(engines.load_engine(model=None, options=OPTIONS, search=[tmp_path / "absent"]), BaselineEngine)
    # ... but a model that is there and cannot be loaded is a failure.
    with pytest.raises(RuntimeError, match="cannot be imported"):
        engines.load_engine(model=None, options=OPTIONS, search=[_model(tmp_path / "m")])
