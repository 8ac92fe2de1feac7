"""Scoring the 2025 interactive track: 11 jobs per study (0..10 clicks of each kind), curves and their areas.

Each job's step is the number of clicks in its lesion-clicks.json input, read from predictions.json
(the socket's inline value; a file input is read from `<input>/<pk>/input/lesion-clicks.json` when
there). The jobs of one step are paired with the ground truth as in the other editions; a study is
scored only when every step 0..10 has exactly one job, and gets per step Dice, FPV and FNV, the area
under each curve over the steps (trapezoid rule with unit spacing, as the organisers' script) and the
last step's values. A study missing a step is an error for that study, never a partial area.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import integrate

from evaluation.aggregates import describe
from evaluation.pairing import Case, match_jobs
from evaluation.predictions import Job
from evaluation.problems import Problem
from evaluation.scoring import StudyResult
from evaluation.studies import MaskIndex
from petct.clicks import parse_clicks
from petct.editions import CLICKS_JSON, MAX_CLICKS
from petct.errors import InputError
from petct.jsonio import read_json

STEPS = tuple(range(MAX_CLICKS + 1))
CURVES = {"dice": "dice", "false_positive_volume": "fpv", "false_negative_volume": "fnv"}
# The organisers' per-case CSV columns, in their order.
CSV_COLUMNS = ("gt_name", "dice_auc", "fpv_auc", "fnv_auc", "dice_final", "fpv_final", "fnv_final")


def area_under_curve(values: list[float] | np.ndarray) -> float:
    """Trapezoid area of a curve sampled at steps 0, 1, ..., n-1 (NaN when any value is NaN)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        raise ValueError("a curve needs at least two steps")
    return float(integrate.cumulative_trapezoid(values, np.arange(values.size))[-1])


@dataclass
class InteractiveStudy:
    """One study's curves over the protocol's steps and what they sum up to."""

    study: str
    steps: dict[int, tuple[Case, StudyResult]] = field(default_factory=dict)

    def summary(self) -> dict[str, float]:
        ordered = [self.steps[k][1].metrics for k in STEPS]
        out = {}
        for metric in CURVES:
            curve = [float(getattr(m, metric)) for m in ordered]
            out[f"{metric}_auc"] = area_under_curve(curve)
            out[f"{metric}_final"] = curve[-1]
        return out

    def to_json(self) -> dict:
        return {"study": self.study, **self.summary(),
                "steps": {str(k): {**result.to_json(), "job": case.job} for k, (case, result) in sorted(self.steps.items())}}

    def csv_row(self) -> list[float | str]:
        s = self.summary()
        return [self.study, s["dice_auc"], s["false_positive_volume_auc"], s["false_negative_volume_auc"],
                s["dice_final"], s["false_positive_volume_final"], s["false_negative_volume_final"]]


def job_step(job: Job, *, input_dir: Path) -> int:
    """The protocol step of a job: how many clicks of each kind its lesion-clicks.json input holds."""
    value = job.values.get(CLICKS_JSON)
    source = f"predictions.json, job {job.pk}, input {CLICKS_JSON}"
    if value is None:
        raise InputError(f"job has no {CLICKS_JSON} input, so its step (click count) is unknown")
    if isinstance(value, dict) and set(value) == {"file"}:
        local = Path(input_dir) / job.pk / "input" / CLICKS_JSON
        if not local.is_file():
            raise InputError(f"the {CLICKS_JSON} input is a file ({value['file']}) the evaluation cannot read; "
                             "give it as a value", path=local)
        value, source = read_json(local, what=CLICKS_JSON), str(local)
    return parse_clicks(value, source=source).step


def group_by_step(jobs: list[Job], ground_truth: MaskIndex, *, input_dir: Path, prediction_path: str
                  ) -> tuple[dict[str, InteractiveStudy], list[Case], dict[int, int], list[Problem], dict[str, list[str]]]:
    """The studies, the cases of every step with each case's step (by id), job-level problems, and per study
    why it cannot have some step."""
    by_step: dict[int, list[Job]] = {k: [] for k in STEPS}
    problems: list[Problem] = []
    for job in jobs:
        try:
            by_step[job_step(job, input_dir=input_dir)].append(job)
        except InputError as exc:
            problems.append(Problem.of(exc, job=job.pk))
    studies = {name: InteractiveStudy(study=name) for name in ground_truth.studies()}
    broken: dict[str, list[str]] = {}
    cases: list[Case] = []
    steps_of: dict[int, int] = {}
    for step in STEPS:
        found, unmatched = match_jobs(by_step[step], ground_truth, input_dir=input_dir, prediction_path=prediction_path)
        cases += found
        steps_of.update((id(case), step) for case in found)
        for problem in unmatched:
            if problem.study in studies:
                broken.setdefault(problem.study, []).append(f"step {step}: {problem.reason}")
            else:
                problems.append(Problem(study=problem.study, job=problem.job, file=problem.file,
                                        reason=f"step {step}: {problem.reason}"))
    return studies, cases, steps_of, problems, broken


def collect(studies: dict[str, InteractiveStudy], cases: list[Case], results: list[tuple[Case, StudyResult]],
            failed: list[Problem], broken: dict[str, list[str]], *, steps_of: dict[int, int]
            ) -> tuple[list[InteractiveStudy], list[Problem]]:
    """The studies with all 11 steps scored; one problem per study missing or failing any step."""
    for case, result in results:
        studies[case.study].steps[steps_of[id(case)]] = (case, result)
    for problem in failed:
        if problem.study in studies:
            broken.setdefault(problem.study, []).append(problem.reason)
    complete, problems = [], []
    for name, study in sorted(studies.items()):
        missing = [k for k in STEPS if k not in study.steps]
        if name in broken or missing:
            reasons = broken.get(name, []) + ([f"no scored prediction for step(s) {', '.join(map(str, missing))}"]
                                              if missing and name not in broken else [])
            problems.append(Problem(study=name, reason="interactive study not scored (every step 0..10 is needed "
                                                       "for its areas under the curves): " + "; ".join(reasons)))
        else:
            complete.append(study)
    return complete, problems


def aggregate_interactive(studies: list[InteractiveStudy]) -> dict:
    """Statistics of the areas and final values over studies (NaN, i.e. undefined Dice/FNV, skipped)."""
    summaries = [s.summary() for s in studies]
    keys = [f"{m}_{kind}" for m in CURVES for kind in ("auc", "final")]
    out = {key: describe([s[key] for s in summaries]) for key in keys}
    positive = sum(1 for s in summaries if math.isfinite(s["dice_auc"]))
    out["studies"] = {"all": len(studies), "positive": positive, "negative": len(studies) - positive}
    return out
