"""The report of the autoPET IV (2025) interactive track: one self-contained HTML file over scored metrics.json.

Per submission: the curves over the click steps (Dice, FPV and FNV per step: each study's curve and the mean
with its spread), the areas under them and the last step's values (mean ± SD over studies), and each
study's row. Across submissions the leaderboard of `rank --challenge autopet-2025-interactive`: the
organisers' code ranks nothing for 2025, so the kit ranks the three areas with the 2022 weights
(docs/editions.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from evaluation.html_report import figures
from evaluation.html_report.inputs import number
from evaluation.interactive import CURVES
from evaluation.ranking import RANKED_METRICS, leaderboard, submission_argument, submission_of
from petct.atomic import atomic_path
from petct.errors import InputError
from petct.jsonio import read_json

AUC_SUFFIX = "_auc"  # the 2025 leaderboard ranks each metric's area under its curve
CURVE_TITLES = {"dice": "Dice", "false_positive_volume": "FPV (ml)", "false_negative_volume": "FNV (ml)"}


@dataclass
class ClickSubmission:
    name: str
    path: Path
    studies: list[dict]  # metrics.json's case records, by study
    aggregates: dict
    errors: list[str]  # one line per problem the scorer reported
    steps: int
    curves_png: str = ""


def read_click_metrics(argument: str) -> tuple[ClickSubmission, dict]:
    """NAME=PATH (or PATH) of a metrics.json scored under autopet-2025-interactive, and the JSON as read;
    InputError naming the file."""
    name, path = submission_argument(argument)
    value = read_json(path, what="an interactive metrics.json")
    cases = value.get("case") if isinstance(value, dict) else None
    if not isinstance(cases, dict) or not cases or not isinstance(value.get("aggregates"), dict) or not all(
            isinstance(c, dict) and isinstance(c.get("steps"), dict) and c["steps"] and "dice_auc" in c
            for c in cases.values()):
        raise InputError("not a metrics.json of the autopet-2025-interactive track (each case needs 'steps' and "
                         "'dice_auc'; score it with --challenge autopet-2025-interactive)", path=path)
    lengths = {len(c["steps"]) for c in cases.values()}
    if len(lengths) != 1:
        raise InputError(f"studies were scored over different numbers of steps ({sorted(lengths)})", path=path)
    studies = sorted(({**c, "study": str(c.get("study", key))} for key, c in cases.items()), key=lambda c: c["study"])
    return ClickSubmission(name=name, path=Path(path), studies=studies, aggregates=value["aggregates"],
                           errors=[_problem_line(e) for e in value.get("errors") or []], steps=lengths.pop()), value


def _problem_line(error) -> str:
    if isinstance(error, dict):
        return f"{error.get('study') or error.get('job') or ''}: {error.get('reason', '')}".strip(": ")
    return str(error)


def step_curves(studies: list[dict], metric: str) -> np.ndarray:
    """studies x steps array of one metric (NaN where undefined)."""
    return np.array([[number(record["steps"][key].get(metric)) for key in sorted(record["steps"], key=int)]
                     for record in studies], dtype=np.float64)


def curves_figure(submission: ClickSubmission) -> str:
    """Dice, FPV and FNV per click step: each study's curve, the mean with its standard deviation."""
    figure, axes = figures._figure(12.0, 3.4, columns=len(CURVES))
    for axis, metric in zip(axes, CURVES):
        figures.step_curves(axis, step_curves(submission.studies, metric), title=CURVE_TITLES[metric],
                            xlabel="clicks of each kind", unit_interval=metric == "dice")
    axes[0].legend(loc="lower right", fontsize=7)
    return figures.png_data_uri(figure)


def ranking_rule() -> str:
    """The rule the leaderboard applies, in words, from the one table it is computed with."""
    parts = "; ".join(f"{metric}{AUC_SUFFIX} weight {weight}, {'higher' if higher else 'lower'} is better"
                      for metric, (weight, higher) in RANKED_METRICS.items())
    return (f"area under each metric's curve over the click steps (trapezoid, unit spacing), its mean over "
            f"studies ranked per metric ({parts}), ordered by weighted mean rank, ties to the higher mean "
            "AUC-Dice (an assumption: the organisers publish no 2025 rule)")


def build_click_report(metrics: list[str], output: Path) -> Path:
    """Write the report; returns its path."""
    read = [read_click_metrics(argument) for argument in metrics]
    submissions = [submission for submission, _ in read]
    if len({s.name for s in submissions}) != len(submissions):
        raise InputError("two submissions share a name; name them NAME=PATH")
    board = leaderboard([submission_of(value, name=s.name, path=s.path, subsets=None, suffix=AUC_SUFFIX)
                         for s, value in read])
    for s in submissions:
        s.curves_png = curves_figure(s)
    from evaluation.html_report.build import render
    from petct.version import kit_version
    html = render({"title": "autoPET IV interactive-track report", "kit_version": kit_version(),
                   "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
                   "rule": ranking_rule(), "board": board, "submissions": submissions, "curves": CURVE_TITLES},
                  template="click_report.html.j2")
    with atomic_path(output) as tmp:
        tmp.write_text(html, encoding="utf-8")
    return Path(output)
