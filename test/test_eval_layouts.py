"""The dataset's real layouts end to end: two-level studies, 2024 prediction names, near-match hints, one key rule."""
from __future__ import annotations

import json
import os
import random
import string
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from eval_helpers import Submission, geometry_of, write_mask
from evaluation.metrics import score_arrays
from evaluation.pairing import Case
from evaluation.report import build_report
from evaluation.scoring import StudyResult
from evaluation.studies import MaskNaming, index_masks
from paths import REPO
from petct.studykey import study_key

GRID = geometry_of((12, 16, 16), spacing=(2.0, 2.0, 3.0))
# A study folder as the organisers' conversion names them: a date, spaces, dots.
DATE_A = "08-12-2001-NA-PET-CT Ganzkoerper  primaer mit KM-10445"
DATE_B = "11-03-2002-NA-PET-CT Ganzkoerper  primaer mit KM.2-77031"


def mask(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.zeros((12, 16, 16), np.uint8)
    z, y, x = rng.integers(2, 8, size=3)
    out[z:z + 3, y:y + 4, x:x + 4] = 1
    return out


def evaluation(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "evaluation", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})


def two_level_ground_truth(root: Path) -> dict[str, np.ndarray]:
    """One patient with two studies, one patient folder holding its files directly, as the dataset has them."""
    truth = {study_key("PETCT_0af7ffe12a", DATE_A): mask(1), study_key("PETCT_0af7ffe12a", DATE_B): mask(2),
             "PETCT_1b2c": mask(3)}
    write_mask(root / "PETCT_0af7ffe12a" / DATE_A / "SEG.nii.gz", truth[study_key("PETCT_0af7ffe12a", DATE_A)], GRID)
    write_mask(root / "PETCT_0af7ffe12a" / DATE_B / "SEG.nii.gz", truth[study_key("PETCT_0af7ffe12a", DATE_B)], GRID)
    write_mask(root / "PETCT_1b2c" / "SEG.nii.gz", truth["PETCT_1b2c"], GRID)
    for folder in (root / "PETCT_0af7ffe12a" / DATE_A, root / "PETCT_1b2c"):  # images beside the masks are not masks
        write_mask(folder / "SUV.nii.gz", truth[study_key("PETCT_0af7ffe12a", DATE_A)], GRID)
    return truth


def test_two_level_keys_follow_the_study_key_rule(tmp_path):
    two_level_ground_truth(tmp_path)
    index = index_masks(tmp_path, what="ground truth")
    assert index.studies() == sorted(["PETCT_0af7ffe12a__08-12-2001-NA-PET-CT_Ganzkoerper__primaer_mit_KM-10445",
                                      "PETCT_0af7ffe12a__11-03-2002-NA-PET-CT_Ganzkoerper__primaer_mit_KM_2-77031",
                                      "PETCT_1b2c"])
    assert not index.duplicates


@pytest.mark.parametrize("layout", ["same two levels", "flat keys"])
def test_score_folders_reads_the_two_level_layout(tmp_path, layout):
    truth = two_level_ground_truth(tmp_path / "gt")
    predictions = {study: np.roll(m, 1, axis=2) for study, m in truth.items()}
    for study, pred in predictions.items():
        if layout == "flat keys":
            write_mask(tmp_path / "pred" / f"{study}.nii.gz", pred, GRID)
    if layout == "same two levels":
        for (patient, date), study in ((("PETCT_0af7ffe12a", DATE_A), study_key("PETCT_0af7ffe12a", DATE_A)),
                                       (("PETCT_0af7ffe12a", DATE_B), study_key("PETCT_0af7ffe12a", DATE_B))):
            write_mask(tmp_path / "pred" / patient / date / "SEG.nii.gz", predictions[study], GRID)
        write_mask(tmp_path / "pred" / "PETCT_1b2c" / "SEG.nii.gz", predictions["PETCT_1b2c"], GRID)
    out = tmp_path / "metrics.json"
    result = evaluation("score-folders", "--ground-truth", str(tmp_path / "gt"), "--predictions",
                        str(tmp_path / "pred"), "--output", str(out), "--workers", "1")
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert sorted(report["case"]) == sorted(truth)
    for study, gt in truth.items():
        expected = score_arrays(ground_truth=gt, prediction=predictions[study], voxel_volume_ml=GRID.voxel_volume_ml)
        assert report["case"][study]["study"] == study
        assert report["case"][study]["dice"] == pytest.approx(expected.dice)
        assert report["case"][study]["false_positive_volume"] == pytest.approx(expected.false_positive_volume)
    # The summary a user came for, on stdout.
    assert "3 studies (3 positive)" in result.stdout and "mean Dice" in result.stdout and "mean FPV" in result.stdout


@pytest.mark.parametrize("suffix,relative", [("_pred", "{study}_pred.nii.gz"), ("/PRED", "{study}/PRED.nii.gz"),
                                             ("_PRED", "{study}_pred.mha")])
def test_prediction_suffix_reads_the_2024_data_centric_names(tmp_path, suffix, relative):
    for seed, study in enumerate(("PETCT_a", "PETCT_b")):
        write_mask(tmp_path / "gt" / f"{study}.nii.gz", mask(seed), GRID)
        write_mask(tmp_path / "pred" / relative.format(study=study), mask(seed), GRID)
    write_mask(tmp_path / "pred" / "PETCT_a.nii.gz", mask(5), GRID)  # not named by the suffix: ignored
    out = tmp_path / "metrics.json"
    result = evaluation("score-folders", "--ground-truth", str(tmp_path / "gt"), "--predictions",
                        str(tmp_path / "pred"), "--output", str(out), "--workers", "1", "--prediction-suffix", suffix)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert sorted(report["case"]) == ["PETCT_a", "PETCT_b"]
    assert all(record["dice"] == 1.0 for record in report["case"].values())


def test_prediction_suffix_in_two_level_folders(tmp_path):
    truth = two_level_ground_truth(tmp_path / "gt")
    write_mask(tmp_path / "pred" / "PETCT_0af7ffe12a" / DATE_A / "PRED.nii.gz",
               truth[study_key("PETCT_0af7ffe12a", DATE_A)], GRID)
    index = index_masks(tmp_path / "pred", what="predictions", naming=MaskNaming(suffix="/PRED"))
    assert index.studies() == [study_key("PETCT_0af7ffe12a", DATE_A)]


@pytest.mark.parametrize("suffix", ["", "/", "_pred.nii.gz", "a/b"])
def test_a_prediction_suffix_that_cannot_be_is_one_line(tmp_path, suffix):
    write_mask(tmp_path / "gt" / "PETCT_a.nii.gz", mask(0), GRID)
    write_mask(tmp_path / "pred" / "PETCT_a.nii.gz", mask(0), GRID)
    result = evaluation("score-folders", "--ground-truth", str(tmp_path / "gt"), "--predictions",
                        str(tmp_path / "pred"), "--output", str(tmp_path / "m.json"), "--prediction-suffix", suffix)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "prediction suffix" in result.stderr and "_pred" in result.stderr


def test_a_prediction_without_ground_truth_gets_a_near_match_hint(tmp_path):
    write_mask(tmp_path / "gt" / "PETCT_0af7ffe12a.nii.gz", mask(0), GRID)
    write_mask(tmp_path / "pred" / "PETCT_0af7ffe12b.nii.gz", mask(0), GRID)  # a typo
    write_mask(tmp_path / "pred" / "unrelated.nii.gz", mask(0), GRID)
    out = tmp_path / "metrics.json"
    result = evaluation("score-folders", "--ground-truth", str(tmp_path / "gt"), "--predictions",
                        str(tmp_path / "pred"), "--output", str(out), "--workers", "1")
    assert result.returncode == 1
    errors = {e["study"]: e["reason"] for e in json.loads(out.read_text())["errors"]}
    assert errors["PETCT_0af7ffe12b"].endswith("did you mean PETCT_0af7ffe12a?")
    assert "did you mean" not in errors["unrelated"]


def test_container_mode_matches_jobs_to_two_level_ground_truth(tmp_path):
    sub = Submission(tmp_path)
    truth = two_level_ground_truth(sub.ground_truth)
    # Uploads named after the patient and study folder as written (spaces, dots) find their safe keys.
    names = {study_key("PETCT_0af7ffe12a", DATE_A): f"PETCT_0af7ffe12a__{DATE_A}_SUV.nii.gz",
             study_key("PETCT_0af7ffe12a", DATE_B): f"{study_key('PETCT_0af7ffe12a', DATE_B)}.mha",
             "PETCT_1b2c": "PETCT_1b2c_SUV.mha"}
    for number, (study, name) in enumerate(names.items()):
        sub.add_job(pk=f"job-{number}", pet_name=name, mask=truth[study], geometry=GRID)
    sub.add_job(pk="job-typo", pet_name="PETCT_1b2d_SUV.mha", mask=truth["PETCT_1b2c"], geometry=GRID)
    sub.write_predictions_json()
    result = evaluation(*sub.argv())
    assert result.returncode == 1
    report = sub.metrics()
    assert sorted(report["case"]) == sorted(truth)
    assert all(record["dice"] == 1.0 for record in report["case"].values())
    [typo] = report["errors"]
    assert typo["job"] == "job-typo" and "did you mean PETCT_1b2c?" in typo["reason"]


def test_jobs_with_the_same_input_names_give_one_message(tmp_path):
    sub = Submission(tmp_path)
    write_mask(sub.ground_truth / "PETCT_a.nii.gz", mask(0), GRID)
    for number in range(4):
        sub.add_job(pk=f"job-{number}", pet_name="SUV.nii.gz", ct_name="CTres.nii.gz", mask=mask(0), geometry=GRID)
    sub.write_predictions_json()
    result = evaluation(*sub.argv())
    assert result.returncode == 1
    errors = sub.metrics()["errors"]
    same = [e for e in errors if e["job"] and "," in e["job"]]
    assert len(same) == 1 and "4 jobs have input images with the same names (CTres.nii.gz, SUV.nii.gz)" in same[0]["reason"]
    assert result.stderr.count("same names") == 1 and "looked for" not in result.stderr


def test_a_failed_try_with_the_same_names_is_not_lumped_with_the_succeeded_job(tmp_path):
    sub = Submission(tmp_path)
    write_mask(sub.ground_truth / "PETCT_a.nii.gz", mask(0), GRID)
    sub.add_job(pk="try-1", pet_name="PETCT_b_SUV.mha", mask=None, status="Failed")
    sub.add_job(pk="try-2", pet_name="PETCT_b_SUV.mha", mask=mask(0), geometry=GRID)
    sub.write_predictions_json()
    assert evaluation(*sub.argv()).returncode == 1
    by_job = {e["job"]: e["reason"] for e in sub.metrics()["errors"] if e["job"]}
    assert sorted(by_job) == ["try-1", "try-2"]
    assert all("no ground truth" in reason and "same names" not in reason for reason in by_job.values())


def test_container_mode_without_an_input_folder_refuses_and_writes_nothing(tmp_path):
    result = evaluation("--input", str(tmp_path / "no-input"), "--output", str(tmp_path / "out"),
                        "--ground-truth", str(tmp_path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "no-input" in result.stderr
    assert not (tmp_path / "out").exists()


def _slow_case_keys(names: list[str]) -> dict[str, str]:
    """Reference: every name's characters outside [A-Za-z0-9_-] become `_`; names that are keys already keep
    them; the others, in name order, take the first of key, key_2, key_3, ... not yet taken."""
    allowed = set(string.ascii_letters + string.digits + "_-")
    safe = {n: "".join(c if c in allowed else "_" for c in n) for n in names}
    keys = {n: n for n in names if safe[n] == n}
    taken = set(keys.values())
    for name in sorted(n for n in names if safe[n] != n):
        key, number = safe[name], 1
        while key in taken:
            number += 1
            key = f"{safe[name]}_{number}"
        keys[name] = key
        taken.add(key)
    return keys


def test_case_keys_match_a_slow_reference_on_random_names():
    rng = random.Random(7)
    alphabet = "ab_-.1 é/"
    result = StudyResult(study="x", metrics=score_arrays(ground_truth=mask(0), prediction=mask(0),
                                                         voxel_volume_ml=1.0))
    for _ in range(300):
        names = sorted({"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 4))) for _ in range(6)})
        cases = [(Case(study=n, ground_truth=Path("g"), prediction=Path("p")), result) for n in names]
        report = build_report(cases, [])
        got = {record["study"]: key for key, record in report["case"].items()}
        assert got == _slow_case_keys(names), names


def test_rank_warns_on_different_study_sets_and_prints_subset_means(tmp_path):
    def submission(name: str, dice: dict[str, float]) -> Path:
        path = tmp_path / name / "metrics.json"
        path.parent.mkdir()
        cases = {s: {"study": s, "dice": d, "false_positive_volume": 1.0, "false_negative_volume": 2.0}
                 for s, d in dice.items()}
        path.write_text(json.dumps({"case": cases, "aggregates": {
            m: {"mean": float(np.mean([c[m] for c in cases.values()]))}
            for m in ("dice", "false_positive_volume", "false_negative_volume")}}))
        return path
    a = submission("teamA", {"s1": 0.9, "s2": 0.5, "s3": 0.7})
    b = submission("teamB", {"s1": 0.8, "s2": 0.6})
    subsets = tmp_path / "subsets.json"
    subsets.write_text(json.dumps({"s1": "centre1", "s2": "centre2", "s3": "centre2"}))
    result = evaluation("rank", str(a), str(b))
    assert result.returncode == 0
    assert "submission teamB covers 2 of the 3 studies" in result.stderr and "missing: s3" in result.stderr
    result = evaluation("rank", str(a), str(b), "--subsets", str(subsets))
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    centre2 = lines[lines.index("subset centre2:") + 1:lines.index("subset centre2:") + 3]
    assert "teamA" in centre2[0] and "dice  0.600" in centre2[0]  # (0.5 + 0.7) / 2
    assert "teamB" in centre2[1] and "dice  0.600" in centre2[1]
