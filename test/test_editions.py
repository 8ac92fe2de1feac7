"""Editions (petct.editions): the 2024 data-centric flag and rank rule, the 2025 clicks, scorer and protocol."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import integrate, ndimage

from algorithm.__main__ import main as algorithm_main
from algorithm.baseline import BaselineEngine
from app_helpers import REPO
from eval_helpers import Submission
from evaluation.__main__ import main as evaluation_main
from evaluation.interactive import area_under_curve
from evaluation.metrics import score_arrays
from petct.click_simulation import simulate_clicks
from petct.clicks import ClickEncoding, Clicks, click_channels, read_clicks
from petct.editions import EDITIONS, edition
from petct.errors import InputError
from petct.phantom import make_study

TINY = (24, 24, 16)


# --- the table -------------------------------------------------------------------------------------------------

def test_default_profile_is_2022_and_only_the_interactive_ones_move_the_output():
    assert edition(None).name == "autopet-2022"
    assert {e.output_relative_path for e in EDITIONS.values() if not (e.clicks or e.scribbles)} == {
        "images/automated-petct-lesion-segmentation"}
    assert edition("autopet-2025-interactive").output_relative_path == "images/tumor-lesion-segmentation"
    assert edition("autopet-2025-interactive").click_steps == tuple(range(11))
    assert edition("autopet-2026-interactive").output_relative_path == "images/tumor-lesion-segmentation"
    assert not edition("autopet-2026-interactive").clicks  # its scribbles are not the 2025 clicks
    with pytest.raises(InputError, match="unknown challenge"):
        edition("autopet-1999")


# --- AUC ----------------------------------------------------------------------------------------------------------

def test_auc_against_a_hand_computed_example():
    # steps 0..3: trapezoids (0+0.5)/2 + (0.5+0.5)/2 + (0.5+1)/2 = 0.25 + 0.5 + 0.75
    assert area_under_curve([0.0, 0.5, 0.5, 1.0]) == pytest.approx(1.5)
    assert area_under_curve([0.7] * 11) == pytest.approx(7.0)
    assert np.isnan(area_under_curve([0.1, float("nan"), 0.2]))


def test_auc_matches_scipy_trapezoid_on_random_curves():
    rng = np.random.default_rng(5)
    for _ in range(200):
        n = int(rng.integers(2, 15))
        curve = rng.uniform(0, 100, size=n)
        assert area_under_curve(curve) == pytest.approx(integrate.trapezoid(curve, dx=1.0), rel=1e-12)


# --- clicks: reading and checking --------------------------------------------------------------------------------

def write(path, value):
    path.write_text(json.dumps(value))
    return path


@pytest.mark.parametrize("value, message", [
    ({"tumor": [[1, 2, 30]], "background": []}, "outside the image"),
    ({"tumor": [[1, 2]], "background": []}, "expected \\[x, y, z\\]"),
    ({"tumor": [[1, 2.5, 3]]}, "must be integers"),
    ({"tumor": [["1", 2, 3]]}, "must be integers"),
    ({"tumor": [[1, 1, 1]] * 11}, "at most 10"),
    ({"points": [{"point": [1, 1, 1], "name": "lesion"}]}, "expected 'tumor' or 'background'"),
    ([[1, 2, 3]], "expected a JSON object"),
    ({"tumour": []}, "unknown keys"),
])
def test_malformed_clicks_name_the_file(tmp_path, value, message):
    path = write(tmp_path / "lesion-clicks.json", value)
    with pytest.raises(InputError, match=message) as error:
        read_clicks(path, size_xyz=(10, 10, 10))
    assert str(path) in str(error.value)


def test_both_file_forms_read_the_same_in_itk_order(tmp_path):
    clicks = Clicks(tumor=((1, 2, 3), (4, 5, 6)), background=((7, 8, 9),))
    plain = read_clicks(write(tmp_path / "a.json", clicks.to_plain()), size_xyz=(10, 10, 10))
    gc = read_clicks(write(tmp_path / "b.json", clicks.to_grand_challenge()), size_xyz=(10, 10, 10))
    assert plain == gc == clicks
    assert clicks.first(1) == Clicks(tumor=((1, 2, 3),), background=((7, 8, 9),)) and clicks.step == 2
    tumour, background = click_channels(clicks, (20, 20, 20))  # (z, y, x): click (x, y, z) lands at [z, y, x]
    assert np.unravel_index(np.argmax(background), background.shape) == (9, 8, 7)
    assert tumour.sum() == pytest.approx(2.0, rel=1e-3)  # unit impulses blurred, as the official heatmaps
    distance, _ = click_channels(clicks, (20, 20, 20), ClickEncoding(kind="distance", max_distance=4))
    assert distance[3, 2, 1] == 1.0 and distance[19, 19, 0] == 0.0


def test_algorithm_refuses_malformed_clicks_in_one_line(tmp_path, capsys):
    study = make_study(3, size=TINY, n_lesions=1)
    folder = tmp_path / "in"
    for sub, image in (("pet", study.suv), ("ct", study.ctres)):
        (folder / "images" / sub).mkdir(parents=True)
        sitk.WriteImage(image, str(folder / "images" / sub / "x.mha"))
    write(folder / "lesion-clicks.json", {"tumor": [[99, 0, 0]], "background": []})
    code = algorithm_main(["--input", str(folder), "--output", str(tmp_path / "out"), "--engine", "baseline",
                           "--challenge", "autopet-2025-interactive"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and "lesion-clicks.json" in err[-1] and "outside the image" in err[-1]
    assert "Traceback" not in "\n".join(err)
    assert not (tmp_path / "out/images/tumor-lesion-segmentation").exists()


# --- simulation ---------------------------------------------------------------------------------------------------

def reference_simulation(mask_zyx, pet_zyx, seed=42, budget=10):
    """The organisers' rules as they wrote them: whole-volume distance transforms, numpy's legacy generator."""
    import cc3d
    label = mask_zyx.transpose(2, 1, 0) != 0
    pet = pet_zyx.transpose(2, 1, 0).astype(np.float64)
    np.random.seed(seed)
    out = {"tumor": [], "background": []}

    def clicks_in(mask, kind, boundary_inside):
        cc = cc3d.connected_components(mask.astype(np.uint8), connectivity=26)
        labels = np.unique(cc)[1:]
        if labels.size == 0:
            return
        sampled = np.random.choice(labels, size=min(budget, len(labels)), replace=False)
        for lab in sampled:
            edt = ndimage.distance_transform_edt(cc == lab)
            out[kind].append(tuple(int(v) for v in np.unravel_index(np.argmax(edt), edt.shape)))
        while len(out[kind]) < budget:
            for lab in sampled:
                component = cc == lab
                edt = ndimage.distance_transform_edt(component)
                inverted = (edt.max() - edt) * (edt > 0)
                border = (inverted == inverted.max()) & (component if boundary_inside else ~component)
                if not boundary_inside and inverted.max() == 0:
                    # A region one voxel thick: the original draws from the whole image outside it (even inside
                    # a lesion); the kit draws from the region itself (documented in petct.click_simulation).
                    border = np.zeros_like(component)
                idx = np.array(np.nonzero(border)).T
                if len(idx) == 0:
                    idx = np.array(np.nonzero(component)).T
                out[kind].append(tuple(int(v) for v in idx[np.random.choice(idx.shape[0])]))
                if len(out[kind]) == budget:
                    break

    if label.any():
        clicks_in(label, "tumor", True)
    threshold = np.percentile(pet[~label], 99.75)
    clicks_in((pet > threshold) & ~label, "background", False)
    return Clicks(tumor=tuple(out["tumor"]), background=tuple(out["background"]))


@pytest.mark.parametrize("seed, lesions", [(11, 3), (12, 0), (5, 1), (9, None)])
def test_simulation_matches_the_whole_volume_reference_and_lands_where_it_should(seed, lesions):
    study = make_study(seed, size="tiny", n_lesions=lesions)
    mask, pet = sitk.GetArrayFromImage(study.seg), sitk.GetArrayFromImage(study.suv)
    clicks = simulate_clicks(mask_zyx=mask, pet_zyx=pet)
    assert clicks == reference_simulation(mask, pet)
    assert clicks == simulate_clicks(mask_zyx=mask, pet_zyx=pet)  # seeded: the same every time
    assert all(mask[z, y, x] for x, y, z in clicks.tumor)
    assert not any(mask[z, y, x] for x, y, z in clicks.background)
    assert len(clicks.background) == 10 and len(clicks.tumor) == (10 if mask.any() else 0)


def test_simulate_clicks_command_writes_grand_challenge_files(tmp_path):
    for seed, lesions in ((11, 2), (12, 0)):
        make_study(seed, size=TINY, n_lesions=lesions).write(tmp_path / "gt")
    result = subprocess.run([sys.executable, "-m", "evaluation", "simulate-clicks", str(tmp_path / "gt"),
                             str(tmp_path / "clicks")], cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    files = sorted(p.name for p in (tmp_path / "clicks").iterdir())
    assert files == ["PETCT_0011_clicks.json", "PETCT_0012_clicks.json"]
    clicks = read_clicks(tmp_path / "clicks/PETCT_0011_clicks.json")
    assert json.loads((tmp_path / "clicks/PETCT_0011_clicks.json").read_text())["type"] == "Multiple points"
    assert len(clicks.tumor) == 10


# --- the baseline uses clicks --------------------------------------------------------------------------------------

def with_hot_distractor(study):
    """The study with a hot, lesion-free blob in the soft tissue of the lower body: a false positive to click away."""
    pet = sitk.GetArrayFromImage(study.suv).astype(np.float32)
    mask = sitk.GetArrayFromImage(study.seg)
    z, y, x = np.indices(pet.shape)
    centre = (int(pet.shape[0] * 0.3), int(pet.shape[1] * 0.5), int(pet.shape[2] * 0.4))
    blob = ((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= 4) & (mask == 0)
    pet[blob] = 15.0
    return pet, mask


def test_baseline_dice_and_false_positives_improve_from_0_to_10_clicks():
    engine = BaselineEngine()
    dice = {0: [], 10: []}
    fpv = {0: 0.0, 10: 0.0}
    for seed in (1, 2, 9, 11, 13):
        study = make_study(seed, size="tiny")
        pet, mask = with_hot_distractor(study)
        ct = sitk.GetArrayFromImage(study.ctres).astype(np.float32)
        spacing = study.suv.GetSpacing()[::-1]
        clicks = simulate_clicks(mask_zyx=mask, pet_zyx=pet)
        for k in (0, 10):
            prediction = engine.predict(pet=pet, ct=ct, spacing_zyx=spacing, clicks=clicks.first(k))
            m = score_arrays(ground_truth=mask, prediction=prediction.mask, voxel_volume_ml=np.prod(spacing) / 1000)
            dice[k].append(m.dice)
            fpv[k] += m.false_positive_volume
    assert np.nanmean(dice[10]) > np.nanmean(dice[0]) + 0.05
    assert fpv[0] > 0 and fpv[10] < fpv[0]


def test_clicks_keep_grow_and_remove():
    from algorithm.click_refinement import refine_with_clicks
    pet = np.ones((20, 20, 20), np.float32)
    pet[3:6, 3:6, 3:6] = 10  # predicted and clicked as tumour: kept
    pet[12:15, 12:15, 12:15] = 8  # missed, clicked: grown
    mask = np.zeros(pet.shape, np.uint8)
    mask[3:6, 3:6, 3:6] = 1
    mask[15:18, 2:4, 2:4] = 1  # a false positive, clicked as background: removed
    clicks = Clicks(tumor=((4, 4, 4), (13, 13, 13)), background=((2, 2, 16), (4, 4, 4)))
    out, notes = refine_with_clicks(mask, pet=pet, clicks=clicks, spacing_zyx=(2.0, 2.0, 2.0))
    expected = np.zeros_like(mask)
    expected[3:6, 3:6, 3:6] = 1
    expected[12:15, 12:15, 12:15] = 1
    assert np.array_equal(out, expected)
    assert notes == {"grown": 1, "kept": 1, "removed": 1}


# --- 2024: the data-centric flag -------------------------------------------------------------------------------------

def run_2024(tmp_path, *extra, env=None):
    study = make_study(4, size=TINY, n_lesions=1)
    folder = tmp_path / "in"
    for sub, image in (("pet", study.suv), ("ct", study.ctres)):
        (folder / "images" / sub).mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(image, str(folder / "images" / sub / "x.mha"))
    return subprocess.run([sys.executable, "-m", "algorithm", "--input", str(folder), "--output",
                           str(tmp_path / "out"), "--engine", "baseline", "--challenge", "autopet-2024", *extra],
                          cwd=REPO, capture_output=True, text=True,
                          env={**{k: v for k, v in os.environ.items() if k != "PETCT_KIT_DATA_CENTRIC"},
                               "PYTHONPATH": str(REPO), **(env or {})})


def test_2024_writes_the_data_centric_answer_from_option_env_or_model_folder(tmp_path):
    assert run_2024(tmp_path / "a", "--no-data-centric").returncode == 0
    assert (tmp_path / "a/out/data-centric-model.json").read_text() == "false"
    assert run_2024(tmp_path / "b", env={"PETCT_KIT_DATA_CENTRIC": "yes"}).returncode == 0
    assert json.loads((tmp_path / "b/out/data-centric-model.json").read_text()) is True
    (tmp_path / "model").mkdir()
    (tmp_path / "model/data-centric-model.json").write_text("true\n")
    from algorithm.data_centric import data_centric_answer
    assert data_centric_answer(option=None, model_folders=[tmp_path / "model"])[0] is True
    (tmp_path / "model/data-centric-model.json").write_text('"yes"')
    with pytest.raises(InputError, match="bare JSON boolean"):
        data_centric_answer(option=None, model_folders=[tmp_path / "model"])


def test_2024_without_an_answer_stops_before_any_work(tmp_path):
    result = run_2024(tmp_path)
    assert result.returncode != 0 and "--data-centric" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


# --- rank: 2024 needs subsets -------------------------------------------------------------------------------------

def metrics_file(path, cases):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"case": {k: {"study": k, "dice": d, "false_positive_volume": 1.0,
                                             "false_negative_volume": 1.0} for k, d in cases.items()},
                                "aggregates": {}}))
    return path


def test_rank_2024_refuses_without_subsets_and_takes_a_studies_csv(tmp_path, capsys):
    a = metrics_file(tmp_path / "a/metrics.json", {"s1": 0.9, "s2": 0.1})
    b = metrics_file(tmp_path / "b/metrics.json", {"s1": 0.5, "s2": 0.4})
    assert evaluation_main(["rank", str(a), str(b), "--challenge", "autopet-2024"]) == 2  # bad options
    assert "refusing to rank" in capsys.readouterr().err
    studies = tmp_path / "studies.csv"
    studies.write_text("Study,Tracer,Centre\ns1,FDG,LMU\ns2,PSMA,UKT\n")
    out = tmp_path / "board.json"
    assert evaluation_main(["rank", str(a), str(b), "--challenge", "autopet-2024", "--studies", str(studies),
                            "--output", str(out)]) == 0
    assert json.loads(out.read_text())["subsets"] == ["FDG/LMU", "PSMA/UKT"]
    (tmp_path / "bad.csv").write_text("study,tracer\ns1,FDG\n")
    assert evaluation_main(["rank", str(a), "--challenge", "autopet-2024", "--studies", str(tmp_path / "bad.csv")]) == 1
    assert "centre" in capsys.readouterr().err


# --- 2025 scorer ---------------------------------------------------------------------------------------------------

def interactive_submission(tmp_path, *, drop_step=None, duplicate_step=None):
    sub = Submission(tmp_path)
    name, gt, geometry = sub.add_phantom_study(11, n_lesions=2)
    negative, gt_neg, geometry_neg = sub.add_phantom_study(12, n_lesions=0)
    clicks = Clicks(tumor=tuple((1, 1, 1) for _ in range(10)), background=tuple((2, 2, 2) for _ in range(10)))
    for study, truth, geo in ((name, gt, geometry), (negative, gt_neg, geometry_neg)):
        for step in range(11):
            if step == drop_step and study == name:
                continue
            # the prediction gains the lesion slice by slice, so the curves rise with the steps
            prediction = truth.copy()
            prediction[: max(0, truth.shape[0] * (10 - step) // 10)] = 0
            prediction[0, 0, :step] = 1  # and a false positive that grows with the step
            for copy in range(2 if step == duplicate_step and study == name else 1):
                pk = f"{study}-{step}-{copy}"
                sub.add_job(pk=pk, pet_name=f"{study}_SUV.mha", mask=prediction, geometry=geo,
                            output_relative_path="images/tumor-lesion-segmentation")
                sub.items[-1]["inputs"].append({"value": clicks.first(step).to_grand_challenge(), "file": None,
                                                "image": None, "interface": {"relative_path": "lesion-clicks.json",
                                                                             "kind": "Multiple points"}})
    sub.write_predictions_json()
    return sub, name, negative


def test_interactive_scorer_groups_jobs_by_click_step(tmp_path):
    sub, name, negative = interactive_submission(tmp_path)
    csv_path = tmp_path / "cases.csv"
    assert evaluation_main(["--challenge", "autopet-2025-interactive", *sub.argv("--csv", str(csv_path))]) == 0
    metrics = sub.metrics()
    record = metrics["case"][name]
    curve = [record["steps"][str(k)]["dice"] for k in range(11)]
    assert len(set(curve)) > 3 and curve[0] == 0.0
    assert record["dice_auc"] == pytest.approx(integrate.trapezoid(curve))
    assert record["dice_final"] == curve[-1]
    fpv = [record["steps"][str(k)]["false_positive_volume"] for k in range(11)]
    assert record["false_positive_volume_auc"] == pytest.approx(integrate.trapezoid(fpv))
    assert metrics["case"][negative]["dice_auc"] is None  # undefined Dice, as the organisers' script
    assert metrics["aggregates"]["dice_auc"]["count"] == 1 and metrics["errors"] == []
    rows = list(csv.reader(csv_path.open()))
    assert rows[0] == ["gt_name", "dice_auc", "fpv_auc", "fnv_auc", "dice_final", "fpv_final", "fnv_final"]
    assert len(rows) == 3


@pytest.mark.parametrize("defect", ["drop_step", "duplicate_step"])
def test_a_study_missing_a_step_is_its_error_not_a_partial_auc(tmp_path, defect):
    sub, name, negative = interactive_submission(tmp_path, **{defect: 4})
    assert evaluation_main(["--challenge", "autopet-2025-interactive", *sub.argv()]) == 1
    metrics = sub.metrics()
    assert name not in metrics["case"] and negative in metrics["case"]
    (error,) = [e for e in metrics["errors"] if e["study"] == name]
    assert "step 4" in error["reason"]


def test_csv_for_the_single_prediction_profiles(tmp_path):
    sub = Submission(tmp_path)
    name, gt, geometry = sub.add_phantom_study(11, n_lesions=2)
    sub.add_job(pk="j1", pet_name=f"{name}_SUV.mha", mask=gt, geometry=geometry)
    sub.write_predictions_json()
    assert evaluation_main(sub.argv("--csv", str(tmp_path / "c.csv"))) == 0
    rows = list(csv.reader((tmp_path / "c.csv").open()))
    assert rows == [["gt_name", "dice_sc", "false_pos_vol", "false_neg_vol"], [name, "1.0", "0.0", "0.0"]]


# --- every profile end to end through the dry run ---------------------------------------------------------------------

def dry_run(tmp_path, *args, env=None):
    return subprocess.run([sys.executable, "-m", "app", "dry-run", "--no-report", "--phantom-size", "tiny", "--output",
                           str(tmp_path / "out"), "--workdir", str(tmp_path / "work"), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


@pytest.mark.slow
def test_dry_run_2024_checks_the_data_centric_output(tmp_path):
    result = dry_run(tmp_path / "ok", "--challenge", "autopet-2024", "--phantoms", "2",
                     env={"PETCT_KIT_DATA_CENTRIC": "false"})
    assert result.returncode == 0, result.stdout + result.stderr
    fake = ("python -c \"import pathlib,sys; o=pathlib.Path(sys.argv[1]); d=o/'images/automated-petct-lesion-"
            "segmentation'; d.mkdir(parents=True); import shutil; shutil.copy(next(pathlib.Path(sys.argv[2])"
            ".glob('images/pet/*.mha')), d/'m.mha'); (o/'data-centric-model.json').write_text('1')\" {output} {input}")
    result = dry_run(tmp_path / "bad", "--challenge", "autopet-2024", "--phantoms", "1", "--command", fake)
    assert result.returncode == 1 and "data-centric-model.json holds 1; expected true or false" in result.stdout


@pytest.mark.slow
def test_dry_run_2025_runs_eleven_steps_per_study_and_scores_the_curves(tmp_path):
    result = dry_run(tmp_path, "--challenge", "autopet-2025-interactive", "--phantoms", "1", "--report")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "dry run PASSED: 11/11 jobs met the contract" in result.stdout
    jobs = sorted((tmp_path / "work/jobs").iterdir())
    steps = sorted(read_clicks(job / "input/lesion-clicks.json").step for job in jobs)
    assert steps == list(range(11))
    metrics = json.loads((tmp_path / "out/metrics.json").read_text())
    (record,) = metrics["case"].values()
    assert set(record["steps"]) == {str(k) for k in range(11)}
    assert record["dice_auc"] is not None and record["steps"]["10"]["dice"] >= record["steps"]["0"]["dice"]
    report = (tmp_path / "out/report.html").read_text()  # the click track's report: its areas and its rule
    assert f'data-value="{record["dice_auc"]!r}"' in report and "dice_auc weight 0.5" in report


@pytest.mark.parametrize("call", [
    "algorithm.pipeline.find_study_inputs", "algorithm.pipeline.mask_path_for", "algorithm.pipeline.run_container",
    "app.dryrun.contract.check_output", "app.dryrun.platform.lay_out_job", "app.dryrun.platform.lay_out_evaluation",
    "app.dryrun.platform.output_socket", "app.dryrun.platform.prediction_item",
])
def test_what_depends_on_the_edition_has_no_default_edition(call):
    """A caller that forgets the edition fails instead of silently getting the 2022 contract."""
    import importlib
    import inspect

    module, _, name = call.rpartition(".")
    parameter = inspect.signature(getattr(importlib.import_module(module), name)).parameters["edition"]
    assert parameter.default is inspect.Parameter.empty and parameter.kind is inspect.Parameter.KEYWORD_ONLY
