"""`python -m algorithm loop`: the autoPET V loop in one process gives each step the mask a separate run gives."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from algorithm.__main__ import main as algorithm_main
from algorithm.closed_loop import ReadyStudy
from algorithm.engine_contract import EngineOptions
from nnunet_helpers import write_scribble_model
from petct.clicks import Clicks
from petct.phantom import make_study
from petct.scribbles import SCRIBBLE_ENCODING

CHALLENGE = ("--challenge", "autopet-2026-interactive")
OUTPUT = Path("images/tumor-lesion-segmentation")


def study_input(folder: Path, study) -> Path:
    for sub, image in (("pet", study.suv), ("ct", study.ctres)):
        (folder / "images" / sub).mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(image, str(folder / "images" / sub / "study.mha"))
    sitk.WriteImage(study.seg, str(folder.parent / "SEG.mha"))
    return folder


def read(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def loop_then_separate_runs(tmp_path: Path, study, *model_args: str, steps: int = 3) -> list[tuple]:
    """(loop mask, separate run's mask, scribbles) per step."""
    folder = study_input(tmp_path / "in", study)
    assert algorithm_main(["loop", "--input", str(folder), "--ground-truth", str(tmp_path / "SEG.mha"),
                           "--output", str(tmp_path / "loop"), "--strategy", "centerline", "--steps", str(steps),
                           *model_args]) == 0
    pairs = []
    for step in range(steps):
        given = tmp_path / "loop" / f"step_{step}" / "lesion-clicks.json"
        (folder / "lesion-clicks.json").write_bytes(given.read_bytes())
        out = tmp_path / f"separate_{step}"
        assert algorithm_main(["--input", str(folder), "--output", str(out), *CHALLENGE, *model_args]) == 0
        pairs.append((read(tmp_path / "loop" / f"step_{step}" / OUTPUT / "study.mha"), read(out / OUTPUT / "study.mha"),
                      json.loads(given.read_text())))
    return pairs


def test_baseline_loop_masks_equal_separate_runs(tmp_path):
    pairs = loop_then_separate_runs(tmp_path, make_study(11, size=(48, 48, 32), n_lesions=3), "--engine", "baseline")
    for loop_mask, separate, _ in pairs:
        assert np.array_equal(loop_mask, separate)
    assert pairs[-1][2]["points"], "the loop added scribbles"


@pytest.fixture(scope="module")
def scribble_model(tmp_path_factory):
    pytest.importorskip("nnunetv2")
    torch.set_num_threads(2)
    study = make_study(11, size=(48, 48, 32), n_lesions=3)
    spacing = tuple(float(s) for s in reversed(study.suv.GetSpacing()))
    # a plan spacing other than the study's: preprocessing resamples, CT and PET apart from the scribbles
    folder = write_scribble_model(tmp_path_factory.mktemp("model"), spacing=[s * 1.3 for s in spacing], patch_size=(24, 32, 32))
    return folder, study


def test_nnunet_loop_masks_equal_separate_runs(tmp_path, scribble_model):
    folder, study = scribble_model
    for loop_mask, separate, _ in loop_then_separate_runs(tmp_path, study, "--model", str(folder), "--no-tta",
                                                          "--device", "cpu"):
        assert np.array_equal(loop_mask, separate)


@pytest.mark.slow
def test_kept_study_predicts_what_a_fresh_engine_predicts(tmp_path, scribble_model):
    from algorithm.nnunet import NnUNetEngine

    folder, study = scribble_model
    options = EngineOptions(device="cpu", use_mirroring=False, click_encoding=SCRIBBLE_ENCODING)
    inputs = study_input(tmp_path / "in", study)
    ready = ReadyStudy(NnUNetEngine.from_folder(folder, options=options),
                       pet_path=inputs / "images/pet/study.mha", ct_path=inputs / "images/ct/study.mha")
    assert ready.preprocessed_once
    fresh = NnUNetEngine.from_folder(folder, options=options)
    pet, ct = ready.study.pet, ready.study.ct
    spacing = ready.study.geometry.spacing[::-1]
    for scribbles in (Clicks(), Clicks(tumor=tuple((x, 20, 12) for x in range(10, 30))),
                      Clicks(tumor=((0, 0, 0),), background=((47, 47, 31), (20, 20, 5)))):
        kept = ready.predict(scribbles)
        assert kept.timings["predict/upload"] == 0.0  # CT and PET were not uploaded again
        expected = fresh.predict(pet=pet.copy(), ct=ct.copy(), spacing_zyx=spacing, clicks=scribbles)
        assert np.array_equal(sitk.GetArrayFromImage(kept.mask), expected.mask)
        assert np.abs(sitk.GetArrayFromImage(kept.probabilities) - expected.probabilities).max() < 1e-5
    ready.close()
