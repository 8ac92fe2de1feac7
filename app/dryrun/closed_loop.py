"""The dry run of the autoPET V (2026) closed loop: each study's steps as the organisers' loop runs them, and scores.

Per study (their `interactive/interactive_loop.py`, docs/editions.md): step 0 runs the algorithm with no
scribbles; before each later step the next scribble is simulated from the last mask the algorithm wrote
and the ground truth (evaluation.scribble_simulation), added to the scribbles so far, and the algorithm runs
again as a new job whose output folder still holds the previous step's output. A failed job scores Dice =
DMM = 0 and the loop goes on from the older mask; under the published rule a mask without false positives
or without false negatives fails the step's simulation, which scores 0 without running the algorithm.
With recorded scribbles (`--scribbles-dir`, the clinicians' category) each step's file is replayed as it is.
Scores are computed here, not by the platform's evaluation, which cannot tell a job's step.
"""
from __future__ import annotations

import math
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from app.dryrun.cases import DryRunCase
from app.dryrun.contract import JobCheck
from app.dryrun.report import EvaluationReport, StudyReport
from evaluation.aggregates import describe
from evaluation.closed_loop import StepMetrics, pooled_dmm_curve, score_step, study_summary
from evaluation.interactive import area_under_curve
from evaluation.records import metrics_json
from evaluation.scribble_simulation import SimulationFailed, next_scribbles
from petct.clicks import Clicks
from petct.editions import SCRIBBLE_STRATEGIES, Edition
from petct.errors import InputError
from petct.imageio import Geometry, read_image
from petct.scribbles import read_scribbles
from petct.studykey import study_key

MIXED_SEED = 42
# The organisers' per-case CSV has no 2026 form; these columns follow the 2025 one.
CSV_COLUMNS = ("gt_name", "strategy", "dice_auc", "dmm_auc", "dice_final", "dmm_final", "fpv_final", "fnv_final")


def strategy_for(study: str, studies: list[str], strategy: str) -> str:
    """The study's strategy; `mixed` deals the three to the studies sorted by name and shuffled with seed 42,
    in turn, so each gets a third (the same studies the same strategy in every run)."""
    if strategy != "mixed":
        return strategy
    order = sorted(studies)
    random.Random(MIXED_SEED).shuffle(order)
    return SCRIBBLE_STRATEGIES[order.index(study) % len(SCRIBBLE_STRATEGIES)]


def recorded_scribbles_path(folder: Path, study: str, step: int) -> Path:
    """Where `--scribbles-dir` holds the scribbles a study's step was given: <study>_step<K>.json."""
    return folder / f"{study_key(study)}_step{step}.json"


def run_study_loop(case: DryRunCase, options, workdir: Path, *, pet: Geometry, edition: Edition,
                   run_job: Callable[..., StudyReport], studies: list[str], loop=None) -> list[StudyReport]:
    """The steps of one study's loop; each report's `metrics` holds its StepMetrics as JSON.

    `studies`: every study of the run, which `mixed` deals the strategies to. `loop`: the study's whole loop
    already run in one process (app.dryrun.run.LoopRun); each step's job then takes that step's output.
    """
    truth = sitk.GetArrayFromImage(read_image(case.seg)) != 0
    voxel_ml = float(np.prod(pet.spacing)) / 1000.0
    strategy = strategy_for(case.name, studies, options.strategy)
    scribbles = Clicks()
    last_mask: np.ndarray | None = None
    previous_output: Path | None = None
    image_pks: tuple[str, str] | None = None
    reports = []
    for step in range(options.steps):
        if step > 0:
            try:
                scribbles = _next(case, options, step, truth=truth, mask=last_mask, previous=scribbles,
                                  strategy=strategy, size_xyz=pet.size)
            except SimulationFailed as exc:
                reports.append(_not_run(case, step, f"step scored 0 without a job: {exc}"))
                continue
            except InputError as exc:
                reports.append(_not_run(case, step, str(exc), violation=True))
                continue
        report = run_job(case, options, workdir, pet=pet, edition=edition, clicks=scribbles, step=step,
                         image_pks=image_pks, previous_output=previous_output, loop=loop)
        image_pks = image_pks or _image_pks(report, edition=edition)
        previous_output = report.job.output_at_end_dir  # as the platform passes it on
        if report.check.passed and report.check.mask is not None:
            last_mask = sitk.GetArrayFromImage(read_image(report.check.mask))
            metrics = score_step(ground_truth=truth, prediction=last_mask, voxel_volume_ml=voxel_ml)
        else:
            metrics = StepMetrics.failure()
        report.metrics = {**metrics.to_json(), "strategy": strategy if options.scribbles_dir is None else "recorded",
                          "tumor_points": len(scribbles.tumor), "background_points": len(scribbles.background)}
        reports.append(report)
    return reports


def _next(case: DryRunCase, options, step: int, *, truth: np.ndarray, mask: np.ndarray | None, previous: Clicks,
          strategy: str, size_xyz) -> Clicks:
    if options.scribbles_dir is not None:
        return read_scribbles(recorded_scribbles_path(options.scribbles_dir, case.name, step), size_xyz=size_xyz)
    if mask is None:  # no job has written a mask yet: nothing to simulate from, as in the published loop
        raise SimulationFailed("no earlier mask to simulate a scribble from")
    return next_scribbles(ground_truth_zyx=truth, prediction_zyx=mask, previous=previous, strategy=strategy,
                          rule=options.scribble_rule).scribbles


def _not_run(case: DryRunCase, step: int, reason: str, *, violation: bool = False) -> StudyReport:
    check = JobCheck()
    (check.violations if violation else check.warnings).append(reason)
    report = StudyReport(case=case.name, lesions=case.lesions, outcome=None, check=check, step=step)
    report.metrics = StepMetrics.failure().to_json()
    print(f"  {report.label}: {'FAIL' if violation else 'not run'}: {reason}", flush=True)
    return report


def _image_pks(report: StudyReport, *, edition: Edition) -> tuple[str, str] | None:
    job = report.job
    if job is None:
        return None
    pks = {item["interface"]["relative_path"]: item["image"]["pk"] for item in job.inputs if item.get("image")}
    return pks.get(edition.pet_relative_path), pks.get(edition.ct_relative_path)


def evaluate_loops(studies: list[StudyReport], cases: list[DryRunCase]) -> EvaluationReport:
    """metrics.json of the loops: per study its steps, areas and final values; the means and the pooled DMM."""
    by_study: dict[str, list[StudyReport]] = {}
    for report in studies:
        by_study.setdefault(report.case, []).append(report)
    records, steps_of = {}, {}
    for study, reports in by_study.items():
        steps = [_step_metrics(r.metrics) for r in sorted(reports, key=lambda r: r.step)]
        steps_of[study] = steps
        records[study_key(study)] = {"study": study, "strategy": reports[0].metrics.get("strategy"),
                                     **study_summary(steps),
                                     "steps": {str(r.step): r.metrics for r in reports}}
    pooled = pooled_dmm_curve(steps_of)
    summaries = list(records.values())
    aggregates = {key: describe([r[key] for r in summaries]) for key in
                  ("dice_auc", "dmm_auc", "dice_final", "dmm_final", "false_positive_volume_final",
                   "false_negative_volume_final")}
    aggregates["dmm_pooled"] = {"per_step": pooled, "auc": area_under_curve(pooled), "final": pooled[-1]}
    aggregates["studies"] = {"all": len(records)}
    metrics = metrics_json(records, aggregates=aggregates)
    report = EvaluationReport(exit_code=0, seconds=0.0, metrics=metrics, aggregates=aggregates)
    return report


def _step_metrics(record: dict) -> StepMetrics:
    nan = float("nan")
    return StepMetrics(dice=_num(record["dice"]), dmm=_num(record["dmm"]), tp=record["tp"], fp=record["fp"],
                       fn=record["fn"], false_positive_volume=_num(record["false_positive_volume"]),
                       false_negative_volume=_num(record["false_negative_volume"]), failed=record["failed"]) \
        if record is not None else StepMetrics(dice=nan, dmm=nan, tp=None, fp=None, fn=None,
                                               false_positive_volume=nan, false_negative_volume=nan)


def _num(value) -> float:
    return float("nan") if value is None else float(value)


def csv_rows(metrics: dict) -> list[list]:
    """One row per study in CSV_COLUMNS' order."""
    return [[r["study"], r["strategy"], r["dice_auc"], r["dmm_auc"], r["dice_final"], r["dmm_final"],
             r["false_positive_volume_final"], r["false_negative_volume_final"]] for r in metrics["case"].values()]


def summary_line(aggregates: dict) -> str:
    """One line for people: studies, mean areas and final values, the pooled DMM's area."""
    parts = [f"{aggregates['studies']['all']} studies"]
    for key, label in (("dice_auc", "Dice AUC"), ("dmm_auc", "DMM AUC"), ("dice_final", "final Dice"),
                       ("dmm_final", "final DMM")):
        mean = aggregates[key].get("mean")
        parts.append(f"mean {label} {mean:.3f}" if isinstance(mean, float) and math.isfinite(mean) else
                     f"mean {label} -")
    pooled = aggregates["dmm_pooled"]["auc"]
    parts.append(f"pooled DMM AUC {pooled:.3f}" if math.isfinite(pooled) else "pooled DMM AUC -")
    return ", ".join(parts)
