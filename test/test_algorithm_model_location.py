"""Never the wrong model in silence, end to end: the container CLI and the dry-run on real model folders."""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

import algorithm.__main__ as container
from algorithm import engine_choice
from algorithm.runinfo import parse_ran_line
from algorithm_helpers import REPO, output_files, run_algorithm, write_platform_input
from nnunet_helpers import require_nnunetv2
from petct.phantom import make_study

require_nnunetv2()

TRAINER = "nnUNetTrainer__nnUNetPlans__3d_fullres"
SIZE = (24, 24, 16)


@pytest.fixture(scope="module")
def models(tmp_path_factory, nnunet_case):
    """A usable one-fold model, a fold_all-only one and a two-trainer one (same random network)."""
    root = tmp_path_factory.mktemp("models")
    good = nnunet_case.copy_model(root / "good") / "Dataset999_KitTest" / TRAINER
    shutil.rmtree(good / "fold_1")
    fold_all = root / "fold_all" / TRAINER
    shutil.copytree(good, fold_all)
    (fold_all / "fold_0").rename(fold_all / "fold_all")
    two = root / "two"
    shutil.copytree(good, two / TRAINER)
    shutil.copytree(good, two / "nnUNetTrainer__nnUNetResEncUNetMPlans__3d_fullres")
    study = make_study(42, size=SIZE, n_lesions=2)
    return {"good": root / "good", "fold_all": root / "fold_all", "two": two, "root": root,
            "input": write_platform_input(root / "input", study)}


def _run_in_process(argv, monkeypatch, search, capsys):
    """The container's main() with the default model locations replaced by `search`."""
    monkeypatch.setattr(engine_choice, "MODEL_SEARCH_PATH", tuple(search))
    code = container.main([str(a) for a in argv])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("kind, expected", [
    ("fold_all", "found only fold_all (a model trained on all cases); pass --folds all"),
    ("two", "2 trainer folders for this model location"),
    ("fold_folder", "this is a fold folder"),
    ("no_checkpoints", "trainer folder without usable checkpoints"),
])
def test_default_location_unusable_exits_2_without_running_the_baseline(models, tmp_path, monkeypatch, capsys,
                                                                         kind, expected):
    location = {"fold_all": models["fold_all"], "two": models["two"]}.get(kind, tmp_path / "model")
    if kind == "fold_folder":
        shutil.copytree(models["good"] / "Dataset999_KitTest" / TRAINER / "fold_0", location)
    elif kind == "no_checkpoints":
        shutil.copytree(models["good"], location)
        for checkpoint in location.rglob("*.pth"):
            checkpoint.unlink()
    code, stderr = _run_in_process(["--input", models["input"].root, "--output", tmp_path / "out", "--device", "cpu"],
                                   monkeypatch, [location, tmp_path / "absent"], capsys)
    assert code == 2
    last = stderr.strip().splitlines()[-1]
    assert "error:" in last and expected in last and str(location) in last
    assert "baseline" not in stderr
    assert output_files(tmp_path / "out") == []


def test_baseline_only_when_every_location_is_absent_or_empty(models, tmp_path, monkeypatch, capsys):
    (tmp_path / "empty").mkdir()
    code, stderr = _run_in_process(["--input", models["input"].root, "--output", tmp_path / "out"],
                                   monkeypatch, [tmp_path / "empty", tmp_path / "absent"], capsys)
    assert code == 0
    assert "falling back to the weight-free baseline engine" in stderr
    assert parse_ran_line(stderr.strip().splitlines()[-1])["engine"] == "baseline"


def test_fold_all_and_checkpoint_run_and_the_last_line_says_so(models, tmp_path, monkeypatch, capsys):
    code, stderr = _run_in_process(["--input", models["input"].root, "--output", tmp_path / "a", "--device", "cpu",
                                    "--no-tta", "--folds", "all"], monkeypatch, [models["fold_all"]], capsys)
    assert code == 0, stderr
    ran = parse_ran_line(stderr.strip().splitlines()[-1])
    assert ran["folds"] == ["all"] and ran["model"] == str(models["fold_all"] / TRAINER)
    assert ran["options"]["use_mirroring"] is False and ran["options"]["checkpoint"] == "checkpoint_final.pth"
    # the same weights as fold_0 of the good model: the same mask
    code, stderr = _run_in_process(["--input", models["input"].root, "--output", tmp_path / "b", "--device", "cpu",
                                    "--no-tta", "--model", models["good"]], monkeypatch, [], capsys)
    assert code == 0, stderr
    [a], [b] = output_files(tmp_path / "a"), output_files(tmp_path / "b")
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(a))), sitk.GetArrayFromImage(sitk.ReadImage(str(b))))

    best = tmp_path / "best"
    shutil.copytree(models["good"], best)
    for checkpoint in best.rglob("checkpoint_final.pth"):
        checkpoint.rename(checkpoint.with_name("checkpoint_best.pth"))
    code, stderr = _run_in_process(["--input", models["input"].root, "--output", tmp_path / "c", "--model", best,
                                    "--checkpoint", "checkpoint_final.pth", "--device", "cpu"], monkeypatch, [], capsys)
    assert code == 2 and "fold(s) 0 requested" not in stderr
    assert "without usable checkpoints: found fold_0 (checkpoint_best.pth), expected fold_K/checkpoint_final.pth" in \
        stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_two_trainers_chosen_with_plans_through_the_cli(models, tmp_path):
    result = run_algorithm("--input", models["input"].root, "--output", tmp_path / "out", "--model", models["two"],
                           "--device", "cpu", "--no-tta", "--plans", "nnUNetResEncUNetMPlans")
    assert result.returncode == 0, result.stderr
    ran = parse_ran_line(result.stderr)
    assert ran["model"] == str(models["two"] / "nnUNetTrainer__nnUNetResEncUNetMPlans__3d_fullres")
    result = run_algorithm("--input", models["input"].root, "--output", tmp_path / "out2", "--model", models["two"],
                           "--device", "cpu")
    assert result.returncode == 2 and "choose with --plans {nnUNetPlans,nnUNetResEncUNetMPlans}" in result.stderr


def test_engine_from_the_environment(models, tmp_path):
    result = run_algorithm("--input", models["input"].root, "--output", tmp_path / "out",
                           env={"PETCT_KIT_ENGINE": "nnunet"})
    assert result.returncode == 2 and "--engine nnunet but no nnU-Net model found" in result.stderr
    assert output_files(tmp_path / "out") == []
    result = run_algorithm("--input", models["input"].root, "--output", tmp_path / "out",
                           env={"PETCT_KIT_ENGINE": "nnUnet"})
    assert result.returncode == 2 and "PETCT_KIT_ENGINE: expected one of auto, nnunet, baseline" in result.stderr


def _dry_run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app", "dry-run", "--phantoms", "1", "--phantom-size", "tiny", "--no-report",
                           *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


@pytest.mark.slow
def test_dry_run_passes_model_to_the_local_algorithm_and_shows_the_engine(models, tmp_path):
    result = _dry_run("--model", models["fold_all"], "--output", tmp_path / "bad")
    assert result.returncode == 1
    verdicts = json.loads((tmp_path / "bad" / "dry-run.json").read_text())
    assert [s["exit_code"] for s in verdicts["studies"]] == [2]
    assert all(s["engine"] is None for s in verdicts["studies"])
    log = (tmp_path / "bad" / "logs" / f"{verdicts['studies'][0]['study']}.log").read_text()
    assert "pass --folds all" in log.strip().splitlines()[-1]

    command = (f"{shlex.quote(sys.executable)} -m algorithm --input {{input}} --output {{output}} --model "
               f"{shlex.quote(str(models['fold_all']))} --folds all --device cpu --no-tta")
    result = _dry_run("--command", command, "--output", tmp_path / "good")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "nnunet 3d_fullres fall" in result.stdout
    verdicts = json.loads((tmp_path / "good" / "dry-run.json").read_text())
    assert all(s["engine"]["folds"] == ["all"] for s in verdicts["studies"])

    result = _dry_run("--output", tmp_path / "baseline")
    verdicts = json.loads((tmp_path / "baseline" / "dry-run.json").read_text())
    assert all(s["engine"]["engine"] == "baseline" for s in verdicts["studies"])
    assert " baseline " in result.stdout
