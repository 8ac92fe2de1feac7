"""`python -m evaluation` end to end: container mode on a grand-challenge submission, and score-folders."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from eval_helpers import Submission, all_keys, geometry_of, write_mask
from evaluation.__main__ import main
from evaluation.metrics import score_arrays
from evaluation.studies import index_masks, input_candidates, mask_key
from paths import REPO
from petct.imageio import Geometry
from petct.jsonio import strict


def load_strict(path: Path) -> dict:
    """Parse JSON refusing NaN/Infinity, as the leaderboard needs."""
    def refuse(constant):
        raise AssertionError(f"non-strict JSON constant {constant}")
    return json.loads(path.read_text(), parse_constant=refuse)


def errors_by_study(report: dict) -> dict[str, list[dict]]:
    by_study: dict[str, list[dict]] = {}
    for error in report["errors"]:
        by_study.setdefault(error["study"], []).append(error)
    return by_study


def noisy(mask: np.ndarray, seed: int) -> np.ndarray:
    """A prediction: the mask shifted by one voxel, plus a few scattered false positive voxels."""
    rng = np.random.default_rng(seed)
    pred = np.roll(mask, 1, axis=2).copy()
    pred.ravel()[rng.integers(0, pred.size, size=20)] = 1
    return pred


def test_container_mode_end_to_end(tmp_path, capsys):
    sub = Submission(tmp_path)
    expected = {}
    # Three ways a study's inputs may be named; the third job has no PET input, only a CT one.
    names = {1: ("PETCT_0001_SUV.mha", "PETCT_0001_CTres.mha"), 2: ("PETCT_0002.nii.gz", None),
             3: (None, "PETCT_0003_CTres.mha")}
    for seed, (pet, ct) in names.items():
        study, mask, geometry = sub.add_phantom_study(seed, n_lesions=0 if seed == 3 else 3)
        pred = noisy(mask, seed)
        sub.add_job(pk=f"job-{seed}", pet_name=pet, ct_name=ct, mask=pred, geometry=geometry,
                    file_name=f"{seed:08x}-uuid.mha")
        expected[study] = score_arrays(ground_truth=mask, prediction=pred,
                                       voxel_volume_ml=geometry.voxel_volume_ml)
    sub.write_predictions_json()

    assert main(sub.argv()) == 0
    report = load_strict(sub.output / "metrics.json")
    assert report["errors"] == []
    assert sorted(report["case"]) == ["PETCT_0001", "PETCT_0002", "PETCT_0003"]
    for study, metrics in expected.items():
        case = report["case"][study]
        assert {k: case[k] for k in metrics.to_json()} == pytest.approx(strict(metrics.to_json()))
        assert case["job"] == f"job-{study[-1]}"
        assert case["prediction_file"].endswith(f"{int(study[-1]):08x}-uuid.mha")
        assert case["ground_truth_file"] == str(sub.ground_truth / study / "SEG.mha")
    assert report["case"]["PETCT_0003"]["dice"] is None  # negative study
    assert report["aggregates"]["studies"] == {"all": 3, "positive": 2, "negative": 1}
    assert report["aggregates"]["dice"]["count"] == 2
    assert report["aggregates"]["false_positive_volume"]["count"] == 3
    assert "pearson_r" in report["aggregates"]["volume_correlation"]
    assert [p.name for p in sub.output.iterdir()] == ["metrics.json"]  # no temporary files left
    assert "error" not in capsys.readouterr().err


def test_runs_as_a_module_with_the_platform_defaults_overridden(tmp_path):
    sub = Submission(tmp_path)
    study, mask, geometry = sub.add_phantom_study(4, n_lesions=2)
    sub.add_job(pk="only", pet_name=f"{study}_SUV.mha", mask=mask, geometry=geometry)
    sub.write_predictions_json()
    run = subprocess.run([sys.executable, "-m", "evaluation", *sub.argv()], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert sub.metrics()["case"][study]["dice"] == 1.0


SHAPE = (8, 9, 10)
GRID = geometry_of(SHAPE, spacing=(2.0, 2.0, 3.0), origin=(1.0, 2.0, 3.0))


def small_mask(seed: int) -> np.ndarray:
    mask = np.zeros(SHAPE, np.uint8)
    mask[1 + seed % 3: 5, 2:6, 3:7] = 1
    return mask


def test_every_bad_input_is_reported_and_the_rest_is_scored(tmp_path, capsys):
    sub = Submission(tmp_path)
    gt_dir = sub.ground_truth
    good_bytes = write_mask(tmp_path / "scratch.mha", small_mask(0), GRID).read_bytes()
    studies = ["PETCT_good", "PETCT_labels", "PETCT_garbage", "PETCT_empty", "PETCT_trunc", "PETCT_flat",
               "PETCT_float", "PETCT_nan", "PETCT_grid", "PETCT_twojobs", "PETCT_nojob", "PETCT_nofile"]
    for i, study in enumerate(studies):
        write_mask(gt_dir / f"{study}_SEG.mha", small_mask(i), GRID)
    # Two ground-truth files for one study: flat and study-folder layouts at once.
    write_mask(gt_dir / "PETCT_dup_SEG.mha", small_mask(1), GRID)
    write_mask(gt_dir / "PETCT_dup" / "SEG.mha", small_mask(1), GRID)
    # Images beside the masks are not ground truth and must not count as studies.
    write_mask(gt_dir / "PETCT_good_SUV.mha", small_mask(0), GRID)

    def job(study, **kwargs):
        return sub.add_job(pk=f"pk-{study}", pet_name=f"{study}_SUV.nii.gz", ct_name=f"{study}_CTres.nii.gz",
                           **kwargs)

    job("PETCT_good", mask=small_mask(0), geometry=GRID)
    job("PETCT_labels", mask=small_mask(1).astype(np.int8) * 2, geometry=GRID)
    job("PETCT_garbage", raw_bytes=b"\x00\x01garbage" * 50)
    job("PETCT_empty", raw_bytes=b"")
    job("PETCT_trunc", raw_bytes=good_bytes[: len(good_bytes) // 2])
    flat = job("PETCT_flat", mask=None)  # a 2D image
    flat.parent.mkdir(parents=True)
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((9, 10), np.uint8)), str(flat))
    job("PETCT_float", mask=small_mask(7).astype(np.float32) * 0.9, geometry=GRID)
    job("PETCT_nan", mask=np.full(SHAPE, np.nan, np.float32), geometry=GRID)
    job("PETCT_grid", mask=small_mask(8), geometry=Geometry(**{**GRID.__dict__, "spacing": (2.0, 2.0, 2.0)}))
    sub.add_job(pk="pk-twojobs-a", pet_name="PETCT_twojobs_SUV.mha", mask=small_mask(9), geometry=GRID)
    sub.add_job(pk="pk-twojobs-b", pet_name="PETCT_twojobs_0000.nii.gz", mask=small_mask(9), geometry=GRID)
    job("PETCT_nofile", mask=None)
    job("PETCT_dup", mask=small_mask(1), geometry=GRID)
    sub.add_job(pk="pk-stranger", pet_name="PETCT_stranger_SUV.mha", mask=small_mask(0), geometry=GRID)
    not_a_job = len(sub.items) + 2
    sub.write_predictions_json(sub.items + [{"pk": "pk-broken", "inputs": []}, "not a job"])

    assert main(sub.argv()) == 1  # the leaderboard must not rank a partial submission
    report = load_strict(sub.output / "metrics.json")
    assert sorted(report["case"]) == ["PETCT_good", "PETCT_labels"]
    assert report["case"]["PETCT_good"]["dice"] == 1.0
    assert report["case"]["PETCT_labels"]["dice"] == 1.0
    assert any("labels other than 0 and 1" in w for w in report["case"]["PETCT_labels"]["warnings"])
    assert report["aggregates"]["studies"]["all"] == 2

    errors = errors_by_study(report)

    def expect(study, reason, file_part, job=None):
        found = errors.get(study, [])
        assert len(found) == 1, (study, found)
        assert reason in found[0]["reason"], (study, found[0])
        assert file_part in (found[0]["file"] or ""), (study, found[0])
        if job:
            assert found[0]["job"] == job

    out = "pk-{}/output/images/automated-petct-lesion-segmentation"
    expect("PETCT_garbage", "not a readable image", out.format("PETCT_garbage"), "pk-PETCT_garbage")
    expect("PETCT_empty", "file is empty", out.format("PETCT_empty"))
    expect("PETCT_trunc", "truncated", out.format("PETCT_trunc"))
    expect("PETCT_flat", "expected a 3D image, got 2D", out.format("PETCT_flat"))
    expect("PETCT_float", "floating-point", out.format("PETCT_float"))
    expect("PETCT_nan", "NaN", out.format("PETCT_nan"))
    expect("PETCT_grid", "not on the ground truth's grid: spacing", out.format("PETCT_grid"))
    expect("PETCT_twojobs", "study has 2 jobs (pk-twojobs-a, pk-twojobs-b)", "PETCT_twojobs_SEG.mha")
    expect("PETCT_nojob", "no algorithm job for this ground-truth study", "PETCT_nojob_SEG.mha")
    expect("PETCT_nofile", "prediction folder does not exist", out.format("PETCT_nofile"))
    expect("PETCT_dup", "2 ground-truth files for this study", "PETCT_dup_SEG.mha", "pk-PETCT_dup")
    expect("PETCT_stranger", "no ground truth for this job's study", "PETCT_stranger_SUV.mha", "pk-stranger")
    malformed = errors[None]
    assert {e["job"] for e in malformed} == {"pk-broken", None}
    assert any("'outputs' must be a list" in e["reason"] for e in malformed)
    assert any(f"item {not_a_job}: expected an object" in e["reason"] for e in malformed)
    assert len(report["errors"]) == 14

    stderr = capsys.readouterr().err
    for error in report["errors"]:
        assert any(error["reason"] in line and (error["study"] or "") in line
                   for line in stderr.splitlines() if line.startswith("error:")), error
    assert "Traceback" not in stderr

    # The same submission with --allow-partial: same report, exit 0.
    assert main(sub.argv("--allow-partial")) == 0
    assert load_strict(sub.output / "metrics.json") == report


@pytest.mark.parametrize("content, reason", [
    ("{not json", "not readable JSON"),
    ('{"pk": "x"}', "must hold a list of jobs, found dict"),
    (None, "predictions.json does not exist"),
])
def test_malformed_predictions_json_fails_clearly_and_still_writes_metrics(tmp_path, capsys, content, reason):
    sub = Submission(tmp_path)
    write_mask(sub.ground_truth / "PETCT_a.mha", small_mask(0), GRID)
    if content is not None:
        (sub.input / "predictions.json").write_text(content)
    assert main(sub.argv("--allow-partial")) == 1  # nothing scored: never a success
    report = load_strict(sub.output / "metrics.json")
    assert report["case"] == {} and len(report["errors"]) == 1
    assert reason in report["errors"][0]["reason"]
    assert report["errors"][0]["file"].endswith("predictions.json")
    assert reason in capsys.readouterr().err


def test_missing_ground_truth_folder(tmp_path, capsys):
    sub = Submission(tmp_path)
    sub.write_predictions_json([])
    assert main(sub.argv("--ground-truth", str(tmp_path / "nowhere"))) == 1
    assert "ground truth folder does not exist" in capsys.readouterr().err


def test_job_input_names_and_mask_names_give_study_names(tmp_path):
    assert input_candidates("PETCT_0af7ffe12a_SUV.mha") == ["PETCT_0af7ffe12a_SUV", "PETCT_0af7ffe12a"]
    assert input_candidates("PETCT_0af7ffe12a_0000.nii.gz") == ["PETCT_0af7ffe12a_0000", "PETCT_0af7ffe12a"]
    assert input_candidates("PETCT_0001.mha") == ["PETCT_0001", "PETCT"]  # the phantom's names
    assert input_candidates("abc.mha") == ["abc"]
    assert mask_key(Path("gt/PETCT_0af7ffe12a_SEG.nii.gz")) == "PETCT_0af7ffe12a"
    assert mask_key(Path("gt/PETCT_0af7ffe12a.nii.gz")) == "PETCT_0af7ffe12a"
    assert mask_key(Path("gt/PETCT_0001/SEG.mha")) == "PETCT_0001"
    assert mask_key(Path("gt/PETCT_0001.mha")) == "PETCT_0001"  # a mask's _0001 is part of its name
    for name in ("PETCT_1/SEG.mha", "PETCT_1/SUV.mha", "PETCT_2_SEG.nii.gz", "PETCT_2_SUV.nii.gz",
                 "PETCT_3.nrrd", "PETCT_3_CTres.nrrd", "notes.txt", "lung_pet.mha", "lung_PET.mha"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    index = index_masks(tmp_path, what="ground truth")
    assert index.files == {"PETCT_1": tmp_path / "PETCT_1/SEG.mha", "PETCT_2": tmp_path / "PETCT_2_SEG.nii.gz",
                           "PETCT_3": tmp_path / "PETCT_3.nrrd",
                           "lung_pet": tmp_path / "lung_pet.mha"}  # only the dataset's spelling marks an image


def test_a_job_name_matching_two_studies_is_ambiguous(tmp_path):
    sub = Submission(tmp_path)
    write_mask(sub.ground_truth / "PETCT_x.mha", small_mask(0), GRID)
    write_mask(sub.ground_truth / "PETCT_x_0000.mha", small_mask(0), GRID)
    sub.add_job(pk="j", pet_name="PETCT_x_0000.mha", mask=small_mask(0), geometry=GRID)
    sub.write_predictions_json()
    assert main(sub.argv()) == 1
    reasons = [e["reason"] for e in sub.metrics()["errors"]]
    assert any("matches 2 ground-truth studies: PETCT_x_0000, PETCT_x" in r for r in reasons)


def test_score_folders(tmp_path, capsys):
    gt, preds = tmp_path / "gt", tmp_path / "pred"
    write_mask(gt / "PETCT_a_SEG.nii.gz", small_mask(0), GRID)
    write_mask(gt / "PETCT_b" / "SEG.mha", small_mask(1), GRID)
    write_mask(gt / "PETCT_c.mha", small_mask(2), GRID)
    write_mask(preds / "PETCT_a.nii.gz", small_mask(0), GRID)
    write_mask(preds / "PETCT_b.nrrd", small_mask(0), GRID)
    write_mask(preds / "PETCT_z.mha", small_mask(0), GRID)
    out = tmp_path / "result" / "metrics.json"
    argv = ["score-folders", "--ground-truth", str(gt), "--predictions", str(preds), "--output", str(out),
            "--workers", "1"]
    assert main(argv) == 1
    report = load_strict(out)
    assert sorted(report["case"]) == ["PETCT_a", "PETCT_b"]
    assert report["case"]["PETCT_a"]["dice"] == 1.0 and report["case"]["PETCT_b"]["dice"] < 1.0
    errors = errors_by_study(report)
    assert "no prediction for this ground-truth study" in errors["PETCT_c"][0]["reason"]
    assert "no ground truth for this prediction" in errors["PETCT_z"][0]["reason"]
    assert errors["PETCT_z"][0]["file"].endswith("PETCT_z.mha")
    assert main([*argv, "--allow-partial"]) == 0


def test_platform_variations_of_predictions_json(tmp_path, capsys):
    """Shapes a real predictions.json takes: other relative paths and socket kinds, failed jobs, dotted names."""
    sub = Submission(tmp_path)
    for study in ("PETCT_plain", "PETCT_file", "PETCT_path", "PETCT_pet", "PETCT_retried", "PETCT_failed",
                  "1.2.840.113654.2.70.1"):
        write_mask(sub.ground_truth / f"{study}.nii.gz", small_mask(len(study)), GRID)
    mask = small_mask(len("PETCT_plain"))
    sub.add_job(pk="plain", pet_name="PETCT_plain_SUV.mha", ct_name="PETCT_plain_CTres.mha", mask=mask,
                geometry=GRID)
    # The mask's socket as a file socket (image null): the file is still found in its folder.
    sub.add_job(pk="file", pet_name="PETCT_file_SUV.mha", mask=small_mask(len("PETCT_file")), geometry=GRID,
                output_as_file=True)
    # The organiser named the output socket differently: its only image output is scored, with a warning.
    sub.add_job(pk="path", pet_name="PETCT_path_SUV.mha", mask=small_mask(len("PETCT_path")), geometry=GRID,
                output_relative_path="images/lesion-mask")
    # The PET socket at another relative path, and the CT input (listed first) naming nothing known.
    sub.add_job(pk="pet", pet_name="PETCT_pet_SUV.mha", ct_name="unknown.mha", mask=small_mask(len("PETCT_pet")),
                geometry=GRID, pet_relative_path="images/pet-image")
    # A failed job beside a successful one for the same study: the successful one is scored.
    sub.add_job(pk="retried-1", pet_name="PETCT_retried_SUV.mha", status="Failed")
    sub.add_job(pk="retried-2", pet_name="PETCT_retried_SUV.mha", mask=small_mask(len("PETCT_retried")),
                geometry=GRID)
    # Only a failed job: the study cannot be scored, and the reason says why.
    sub.add_job(pk="failed", pet_name="PETCT_failed_SUV.mha", status="Failed")
    sub.add_job(pk="dotted", pet_name="1.2.840.113654.2.70.1.mha", mask=small_mask(len("1.2.840.113654.2.70.1")),
                geometry=GRID)
    sub.write_predictions_json()

    assert main(sub.argv()) == 1
    report = load_strict(sub.output / "metrics.json")
    assert sorted(report["case"]) == ["1_2_840_113654_2_70_1", "PETCT_file", "PETCT_path", "PETCT_pet",
                                      "PETCT_plain", "PETCT_retried"]
    assert all(case["dice"] == 1.0 for case in report["case"].values())
    dotted = report["case"]["1_2_840_113654_2_70_1"]
    assert dotted["study"] == "1.2.840.113654.2.70.1" and dotted["job"] == "dotted"
    assert report["case"]["PETCT_plain"]["warnings"] == []
    assert report["case"]["PETCT_path"]["warnings"] == [
        "job lists no output at images/automated-petct-lesion-segmentation; "
        "scored its only image output, images/lesion-mask"]
    assert report["case"]["PETCT_retried"]["job"] == "retried-2"
    assert report["case"]["PETCT_retried"]["warnings"] == ["job retried-1 has status 'Failed'; ignored"]
    (failed,) = report["errors"]
    assert failed["study"] == "PETCT_failed" and failed["file"].endswith("PETCT_failed.nii.gz")
    assert failed["reason"] == "no successful algorithm job for this ground-truth study: job failed has status 'Failed'"
    assert "error: study PETCT_failed" in capsys.readouterr().err


def test_no_key_in_metrics_json_holds_a_dot(tmp_path):
    sub = Submission(tmp_path)
    # Two names that differ only by a dot versus an underscore must not overwrite each other.
    for study in ("PETCT.a", "PETCT_a"):
        write_mask(sub.ground_truth / f"{study}_SEG.mha", small_mask(0), GRID)
        sub.add_job(pk=study, pet_name=f"{study}_SUV.mha", mask=small_mask(0), geometry=GRID)
    sub.write_predictions_json()
    assert main(sub.argv()) == 0
    report = load_strict(sub.output / "metrics.json")
    assert not [key for key in all_keys(report) if "." in key]
    assert report["case"]["PETCT_a"]["study"] == "PETCT_a"  # a name without dots keeps its key
    assert report["case"]["PETCT_a_2"]["study"] == "PETCT.a"


def test_job_with_an_ambiguous_mask_output_is_reported(tmp_path):
    sub = Submission(tmp_path)
    write_mask(sub.ground_truth / "PETCT_a.mha", small_mask(0), GRID)
    sub.add_job(pk="two", pet_name="PETCT_a_SUV.mha", mask=small_mask(0), geometry=GRID,
                output_relative_path="images/mask-a")
    sub.items[0]["outputs"].append({"image": {"name": "b.mha"}, "interface": {"relative_path": "images/mask-b"}})
    sub.write_predictions_json()
    assert main(sub.argv()) == 1
    (error,) = sub.metrics()["errors"]
    assert error["study"] == "PETCT_a" and error["job"] == "two"
    assert "job lists no output at images/automated-petct-lesion-segmentation" in error["reason"]
    assert "--prediction-path" in error["reason"]
    # Naming the socket scores it.
    assert main(sub.argv("--prediction-path", "images/mask-a")) == 0
    assert sub.metrics()["case"]["PETCT_a"]["dice"] == 1.0


@pytest.mark.parametrize("relative_path", ["../../etc", "/etc", "images/../../x"])
def test_relative_paths_that_leave_the_job_folder_are_refused(tmp_path, relative_path):
    sub = Submission(tmp_path)
    write_mask(sub.ground_truth / "PETCT_a.mha", small_mask(0), GRID)
    sub.add_job(pk="evil", pet_name="PETCT_a_SUV.mha")
    sub.items[0]["outputs"][0]["interface"]["relative_path"] = relative_path
    sub.write_predictions_json()
    assert main(sub.argv()) == 1
    reasons = [e["reason"] for e in sub.metrics()["errors"]]
    assert any("invalid interface.relative_path" in r and e_job == "evil"
               for r, e_job in zip(reasons, [e["job"] for e in sub.metrics()["errors"]]))


def test_predictions_json_that_is_a_folder(tmp_path, capsys):
    sub = Submission(tmp_path)
    write_mask(sub.ground_truth / "PETCT_a.mha", small_mask(0), GRID)
    (sub.input / "predictions.json").mkdir()
    assert main(sub.argv()) == 1
    assert "predictions.json is a folder, not a file" in capsys.readouterr().err


@pytest.mark.parametrize("option", [["--workers", "0"], ["--workers", "two"], ["--timeout", "0"],
                                    ["--timeout", "nan"], ["--timeout", "-5"]])
def test_bad_options_are_refused_by_the_parser(tmp_path, capsys, option):
    with pytest.raises(SystemExit) as exit_:
        main(["--input", str(tmp_path), "--output", str(tmp_path / "out"), *option])
    assert exit_.value.code == 2
    assert option[0] in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_unwritable_output_is_one_line_and_nonzero(tmp_path, capsys):
    sub = Submission(tmp_path)
    write_mask(sub.ground_truth / "PETCT_a.mha", small_mask(0), GRID)
    sub.add_job(pk="a", pet_name="PETCT_a_SUV.mha", mask=small_mask(0), geometry=GRID)
    sub.write_predictions_json()
    sub.output.parent.mkdir(exist_ok=True)
    sub.output.write_text("a file where the output folder should be")
    assert main(sub.argv()) == 1
    err = capsys.readouterr().err
    assert f"error: file {sub.output / 'metrics.json'}: cannot write metrics" in err
    assert "Traceback" not in err
