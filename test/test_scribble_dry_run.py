"""`python -m app dry-run --challenge autopet-2026-interactive`: the closed scribble loop on phantoms."""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from app.__main__ import main as app_main
from app.dryrun.closed_loop import recorded_scribbles_path, strategy_for
from evaluation.closed_loop import score_step
from evaluation.scribble_simulation import next_scribbles
from petct.clicks import Clicks
from petct.scribbles import read_scribbles

CHALLENGE = ("--challenge", "autopet-2026-interactive")


def dry_run(tmp_path: Path, *args: str) -> int:
    return app_main(["dry-run", *CHALLENGE, "--no-report", "--phantoms", "2", "--phantom-size", "tiny", "--steps", "3",
                     "--workdir", str(tmp_path / "work"), "--output", str(tmp_path / "out"), *args])


def jobs_by_step(tmp_path: Path) -> dict[tuple[str, int], Path]:
    """Each job's folder by (study, step), from dry-run.json."""
    runs = json.loads((tmp_path / "out" / "dry-run.json").read_text())["studies"]
    return {(r["study"], r["step"]): tmp_path / "work" / "jobs" / r["job"] for r in runs if r["job"]}


def mask_of(job: Path) -> np.ndarray:
    (mask,) = (job / "output" / "images" / "tumor-lesion-segmentation").iterdir()
    return sitk.GetArrayFromImage(sitk.ReadImage(str(mask)))


@pytest.mark.slow
def test_each_step_gets_the_scribbles_of_the_last_mask_and_is_scored_as_the_loop_scores(tmp_path):
    assert dry_run(tmp_path, "--report", "--strategy", "random", "--csv", str(tmp_path / "loop.csv"),
                   "--junit", str(tmp_path / "junit.xml")) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    jobs = jobs_by_step(tmp_path)
    for record in metrics["case"].values():
        study = record["study"]
        seg = sitk.ReadImage(str(tmp_path / "work" / "phantoms" / study / "SEG.mha"))
        truth = sitk.GetArrayFromImage(seg)
        scribbles = Clicks()
        for step in range(3):
            job = jobs[(study, step)]
            given = read_scribbles(job / "input" / "lesion-clicks.json")
            if step:
                scribbles = next_scribbles(ground_truth_zyx=truth, prediction_zyx=mask_of(jobs[(study, step - 1)]),
                                           previous=scribbles, strategy="random").scribbles
            assert given == scribbles
            # every step of a study gets the same images, so its mask replaces the previous step's in place
            assert sorted(p.name for p in (job / "input" / "images" / "pet").iterdir()) == \
                sorted(p.name for p in (jobs[(study, 0)] / "input" / "images" / "pet").iterdir())
            expected = score_step(ground_truth=truth, prediction=mask_of(job),
                                  voxel_volume_ml=float(np.prod(seg.GetSpacing())) / 1000)
            assert {k: record["steps"][str(step)][k] for k in ("dice", "tp", "fp", "fn")} == \
                {k: getattr(expected, k) for k in ("dice", "tp", "fp", "fn")}
    rows = list(csv.DictReader((tmp_path / "loop.csv").open()))
    assert len(rows) == 2 and {r["strategy"] for r in rows} == {"random"}
    assert "dmm_pooled" in metrics["aggregates"] and len(metrics["aggregates"]["dmm_pooled"]["per_step"]) == 3
    assert (tmp_path / "junit.xml").is_file()
    assert "autoPET V closed-loop report" in (tmp_path / "out" / "report.html").read_text()


def same_loops(one: Path, other: Path) -> None:
    """Two dry runs' loops gave every step the same scribbles and the same mask, and scored them the same."""
    steps = {r["study"]: r["steps"] for r in json.loads((one / "out" / "metrics.json").read_text())["case"].values()}
    assert steps == {r["study"]: r["steps"]
                     for r in json.loads((other / "out" / "metrics.json").read_text())["case"].values()}
    jobs, other_jobs = jobs_by_step(one), jobs_by_step(other)
    assert set(jobs) == set(other_jobs)
    for key, job in jobs.items():
        assert np.array_equal(mask_of(job), mask_of(other_jobs[key])), key
        assert read_scribbles(job / "input" / "lesion-clicks.json") == \
            read_scribbles(other_jobs[key] / "input" / "lesion-clicks.json")


@pytest.mark.slow
def test_the_kit_algorithm_runs_each_loop_in_one_process_with_the_masks_of_separate_runs(tmp_path):
    assert dry_run(tmp_path / "loop", "--strategy", "mixed") == 0
    assert len(list((tmp_path / "loop" / "work" / "loops").iterdir())) == 2  # one process per study
    separate = f"{sys.executable} -m algorithm --input {{input}} --output {{output}}"
    assert dry_run(tmp_path / "separate", "--strategy", "mixed", "--command", separate) == 0
    assert not (tmp_path / "separate" / "work" / "loops").exists()
    same_loops(tmp_path / "loop", tmp_path / "separate")


@pytest.mark.slow
def test_recorded_scribbles_are_replayed_unchanged(tmp_path):
    recorded = tmp_path / "recorded"
    recorded.mkdir()
    for study in ("PHANTOM_0011", "PHANTOM_0012"):
        for step in (1, 2):
            points = {"tumor": [[1, 2, step]] * step, "background": [[3, 4, 5]]}
            recorded_scribbles_path(recorded, study, step).write_text(json.dumps(points))
    assert dry_run(tmp_path, "--scribbles-dir", str(recorded)) == 0
    for (study, step), job in jobs_by_step(tmp_path).items():
        given = read_scribbles(job / "input" / "lesion-clicks.json")
        expected = Clicks() if step == 0 else read_scribbles(recorded_scribbles_path(recorded, study, step))
        assert given == expected


EMPTY_MASK_ALGORITHM = """
import sys
from pathlib import Path
import SimpleITK as sitk
pet = next((Path(sys.argv[1]) / "images" / "pet").iterdir())
image = sitk.ReadImage(str(pet))
mask = sitk.Image(image.GetSize(), sitk.sitkUInt8)
mask.CopyInformation(image)
out = Path(sys.argv[2]) / "images" / "tumor-lesion-segmentation"
out.mkdir(parents=True, exist_ok=True)
sitk.WriteImage(mask, str(out / pet.name), True)
"""


@pytest.mark.slow
def test_published_rule_scores_a_failed_simulation_zero_without_a_job(tmp_path, capsys):
    script = tmp_path / "empty_mask.py"
    script.write_text(EMPTY_MASK_ALGORITHM)
    command = f"{sys.executable} {script} {{input}} {{output}}"
    # an empty mask has no false positive voxel: the published simulation fails at every later step
    assert dry_run(tmp_path / "published", "--command", command, "--scribble-rule", "published") == 0
    out = capsys.readouterr().out
    metrics = json.loads((tmp_path / "published" / "out" / "metrics.json").read_text())
    lesions = metrics["case"]["PHANTOM_0011"]["steps"]
    assert [lesions[str(k)]["failed"] for k in range(3)] == [False, True, True]
    assert lesions["1"]["dice"] == 0 and lesions["1"]["dmm"] == 0
    assert "PHANTOM_0011 @1: not run: step scored 0 without a job" in out and "PHANTOM_0011 @2: not run" in out
    free = metrics["case"]["PHANTOM_0012"]["steps"]  # lesion-free: run again without scribbles, Dice 1
    assert [free[str(k)]["dice"] for k in range(3)] == [1.0, 1.0, 1.0]
    # under the kit's rule the missed lesions get tumour scribbles and every step runs
    assert dry_run(tmp_path / "kit", "--command", command) == 0
    steps = json.loads((tmp_path / "kit" / "out" / "metrics.json").read_text())["case"]["PHANTOM_0011"]["steps"]
    assert not any(steps[str(k)]["failed"] for k in range(3)) and steps["2"]["tumor_points"] > 0


def test_mixed_deals_each_strategy_to_a_third_by_name():
    names = [f"s{i}" for i in range(9)]
    dealt = [strategy_for(n, names, "mixed") for n in names]
    assert sorted(dealt) == sorted(["centerline", "random", "boundary"] * 3)
    assert dealt == [strategy_for(n, list(reversed(names)), "mixed") for n in names]  # by name, not by order


@pytest.mark.slow
def test_closed_loop_with_a_small_nnunet_model(tmp_path):
    """A random-weight 4-channel model (CT, PET, FG, BG) through two steps of the loop on one phantom."""
    import pytest
    pytest.importorskip("nnunetv2")
    from nnunet_helpers import write_scribble_model
    from petct.phantom import make_study

    spacing = [float(s) for s in reversed(make_study(11, size="tiny", n_lesions=3).suv.GetSpacing())]
    model = write_scribble_model(tmp_path / "model", spacing=spacing, patch_size=(48, 64, 64))
    command = f"{sys.executable} -m algorithm --input {{input}} --output {{output}} --model {model}"
    runs = {}
    for name, runner in (("separate", ["--command", command]), ("loop", ["--model", str(model)])):
        folder = tmp_path / name
        assert app_main(["dry-run", *CHALLENGE, "--no-report", "--phantoms", "1", "--phantom-size", "tiny", "--steps", "2",
                         *runner, "--workdir", str(folder / "work"), "--output", str(folder / "out")]) == 0
        runs[name] = json.loads((folder / "out" / "dry-run.json").read_text())["studies"]
    assert [r["engine"] for r in runs["loop"]] == [r["engine"] for r in runs["separate"]]
    assert [r["engine"]["engine"] for r in runs["separate"]] == ["nnunet", "nnunet"]
    steps = json.loads((tmp_path / "loop" / "out" / "metrics.json").read_text())["case"]["PHANTOM_0011"]["steps"]
    assert not steps["0"]["failed"] and not steps["1"]["failed"]
    assert steps["1"]["tumor_points"] + steps["1"]["background_points"] > 0
    (log,) = (tmp_path / "loop" / "work" / "loops").glob("*/log.txt")  # one process for the study's loop
    assert "preprocessed once for every step" in log.read_text()
    same_loops(tmp_path / "loop", tmp_path / "separate")  # the model loaded once gives each step's mask
