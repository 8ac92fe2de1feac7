"""Ranking autoPET V (2026) closed loops: each submission's mean AUC-Dice and pooled AUC-DMM over its studies,
ranked apart, ordered by the mean of the two ranks, ties to the higher AUC-Dice. The organisers publish no rule
for combining the two areas; this is the kit's (docs/editions.md). Used by `evaluation rank`, campaigns and the
loop report.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from evaluation.closed_loop import StepMetrics, pooled_dmm_curve
from evaluation.interactive import area_under_curve
from evaluation.ranking import submission_argument
from petct.errors import InputError
from petct.jsonio import read_json

SIMULATED, RECORDED = "simulated scribbles", "recorded scribbles"


@dataclass
class LoopSubmission:
    name: str
    path: Path
    studies: list[dict]  # metrics.json's case records
    categories: dict[str, dict] = field(default_factory=dict)  # category -> its summary
    curves_png: str = ""


def read_loop_metrics(argument: str) -> LoopSubmission:
    """NAME=PATH (or PATH) of a dry run's metrics.json under autopet-2026-interactive; InputError naming the file."""
    name, path = submission_argument(argument)
    value = read_json(path, what="a closed-loop metrics.json")
    cases = value.get("case") if isinstance(value, dict) else None
    if not isinstance(cases, dict) or not cases or not all(
            isinstance(c, dict) and isinstance(c.get("steps"), dict) and "dice_auc" in c for c in cases.values()):
        raise InputError("not a metrics.json of autopet-2026-interactive closed loops (each case needs 'steps' and "
                         "'dice_auc'; write it with python -m app dry-run --challenge autopet-2026-interactive)",
                         path=path)
    return LoopSubmission(name=name, path=Path(path), studies=list(cases.values()))


def _steps(record: dict) -> list[StepMetrics]:
    out = []
    for key in sorted(record["steps"], key=int):
        s = record["steps"][key]
        out.append(StepMetrics(dice=_num(s.get("dice")), dmm=_num(s.get("dmm")), tp=s.get("tp"), fp=s.get("fp"),
                               fn=s.get("fn"), false_positive_volume=_num(s.get("false_positive_volume")),
                               false_negative_volume=_num(s.get("false_negative_volume")),
                               failed=bool(s.get("failed"))))
    return out


def _num(value) -> float:
    return math.nan if value is None else float(value)


def category(record: dict) -> str:
    """Simulated or recorded scribbles: the challenge's two categories."""
    return RECORDED if record.get("strategy") == "recorded" else SIMULATED


def summarise(studies: list[dict]) -> dict:
    """Areas, final values and curves of some studies of one submission."""
    steps = {r["study"]: _steps(r) for r in studies}
    lengths = {len(s) for s in steps.values()}
    if len(lengths) != 1:
        raise InputError(f"studies ran different numbers of steps ({sorted(lengths)})")
    pooled = pooled_dmm_curve(steps)
    dice = np.array([[s.dice for s in curve] for curve in steps.values()])
    dmm = np.array([[s.dmm for s in curve] for curve in steps.values()])
    return {"studies": len(studies), "steps": lengths.pop(),
            "dice_auc": _mean(r["dice_auc"] for r in studies), "dmm_auc": _mean(r["dmm_auc"] for r in studies),
            "dice_final": _mean(r["dice_final"] for r in studies),
            "pooled_dmm_auc": area_under_curve(pooled) if len(pooled) > 1 else math.nan,
            "pooled_dmm": pooled, "dice_curves": dice, "dmm_curves": dmm}


def _mean(values) -> float:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return float(np.mean(finite)) if finite else math.nan


def leaderboard(submissions: list[LoopSubmission]) -> list[dict]:
    """Rank of each submission on mean AUC-Dice and pooled AUC-DMM (all its studies), their mean, the order.

    Rows as evaluation.ranking's where the meaning is the same: `submission`, `file`, `position` (1 best).
    """
    rows = [{"submission": s.name, "file": str(s.path), "dice_auc": s.categories["all"]["dice_auc"],
             "pooled_dmm_auc": s.categories["all"]["pooled_dmm_auc"]} for s in submissions]
    for metric in ("dice_auc", "pooled_dmm_auc"):
        values = [r[metric] if math.isfinite(r[metric]) else -math.inf for r in rows]
        for r, v in zip(rows, values):
            r[f"{metric}_rank"] = 1 + sum(other > v for other in values)
    for r in rows:
        r["mean_rank"] = (r["dice_auc_rank"] + r["pooled_dmm_auc_rank"]) / 2
    rows.sort(key=lambda r: (r["mean_rank"], -(r["dice_auc"] if math.isfinite(r["dice_auc"]) else -math.inf)))
    for position, r in enumerate(rows, start=1):
        r["position"] = position
    return rows


def read_loop_submissions(metrics: list[str]) -> list[LoopSubmission]:
    """[NAME=]PATH metrics.json files of closed loops, each summarised over all its studies (categories["all"])."""
    submissions = [read_loop_metrics(argument) for argument in metrics]
    if len({s.name for s in submissions}) != len(submissions):
        raise InputError("two submissions share a name; name them NAME=PATH")
    for s in submissions:
        s.categories["all"] = summarise(s.studies)
    return submissions


def study_sets(submissions: list[LoopSubmission]) -> dict[str, frozenset[str]]:
    """Each submission's studies, for evaluation.ranking.study_set_warnings."""
    return {s.name: frozenset(record["study"] for record in s.studies) for s in submissions}


def format_loop_leaderboard(rows: list[dict]) -> str:
    """A plain-text table, best first."""
    lines = [f"{'#':>2}  {'submission':<24} {'score':>6}  {'AUC-Dice':>8} {'pooled AUC-DMM':>14}  ranks"]
    for r in rows:
        lines.append(f"{r['position']:>2}  {r['submission'][:24]:<24} {r['mean_rank']:>6.2f}  {_fmt(r['dice_auc']):>8} "
                     f"{_fmt(r['pooled_dmm_auc']):>14}  {r['dice_auc_rank']:>4}/{r['pooled_dmm_auc_rank']}")
    return "\n".join(lines)


def _fmt(value: float) -> str:
    return f"{value:.3f}" if math.isfinite(value) else "-"
