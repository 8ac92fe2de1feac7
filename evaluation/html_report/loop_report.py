"""The report of autoPET V (2026) closed loops: one self-contained HTML file over one or more dry runs' metrics.json.

Per submission: the interaction curves (mean Dice and DMM per step with their spread, and each study's
curve), the studies' areas and final values, and the two categories apart when both are there (simulated
scribbles; recorded ones, the clinicians' category), and each tracer apart where the study names carry it. Across submissions a leaderboard: the organisers
publish no rule for combining the two areas, so the kit ranks each submission on the mean AUC-Dice and on
the pooled AUC-DMM (higher is better) and orders by the mean of the two ranks, ties broken by AUC-Dice
(docs/editions.md).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from evaluation.closed_loop import StepMetrics, pooled_dmm_curve
from evaluation.html_report import figures
from evaluation.interactive import area_under_curve
from evaluation.ranking import submission_argument
from petct.atomic import atomic_path
from petct.errors import InputError
from petct.jsonio import read_json
from petct.nnunet_raw import tracer_of

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


def _category(record: dict) -> str:
    return RECORDED if record.get("strategy") == "recorded" else SIMULATED


def _summarise(studies: list[dict]) -> dict:
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
    """Rank of each submission on mean AUC-Dice and pooled AUC-DMM (all its studies), their mean, the order."""
    rows = [{"name": s.name, "dice_auc": s.categories["all"]["dice_auc"],
             "pooled_dmm_auc": s.categories["all"]["pooled_dmm_auc"]} for s in submissions]
    for metric in ("dice_auc", "pooled_dmm_auc"):
        values = [r[metric] if math.isfinite(r[metric]) else -math.inf for r in rows]
        for r, v in zip(rows, values):
            r[f"{metric}_rank"] = 1 + sum(other > v for other in values)
    for r in rows:
        r["score"] = (r["dice_auc_rank"] + r["pooled_dmm_auc_rank"]) / 2
    rows.sort(key=lambda r: (r["score"], -(r["dice_auc"] if math.isfinite(r["dice_auc"]) else -math.inf)))
    for place, r in enumerate(rows, start=1):
        r["place"] = place
    return rows


def curves_figure(summary: dict) -> str:
    """Dice and DMM per step: each study's curve, the mean with its standard deviation, and the pooled DMM."""
    figure, (left, right) = figures._figure(9.0, 3.4, columns=2)
    steps = np.arange(summary["steps"])
    for axis, curves, title in ((left, summary["dice_curves"], "Dice (the loop's rule)"),
                                (right, summary["dmm_curves"], "DMM (lesion F1)")):
        figures.step_curves(axis, curves, title=title, xlabel="step (0: no scribbles)", unit_interval=True)
    right.plot(steps, summary["pooled_dmm"], color="#D55E00", linewidth=2, marker="s", label="pooled over studies")
    right.legend(loc="lower right", fontsize=7)
    return figures.png_data_uri(figure)


def build_loop_report(metrics: list[str], output: Path) -> Path:
    """Write the report; returns its path."""
    submissions = [read_loop_metrics(argument) for argument in metrics]
    if len({s.name for s in submissions}) != len(submissions):
        raise InputError("two submissions share a name; name them NAME=PATH")
    for s in submissions:
        s.categories["all"] = _summarise(s.studies)
        groups = {}
        for record in s.studies:
            groups.setdefault(_category(record), []).append(record)
        if len(groups) > 1:
            for category, records in sorted(groups.items()):
                s.categories[category] = _summarise(records)
        if any(tracer_of(record["study"]) for record in s.studies):  # the names say FDG or PSMA: each apart
            tracers = {}
            for record in s.studies:
                tracers.setdefault(tracer_of(record["study"]) or "none in the name", []).append(record)
            for tracer, records in sorted(tracers.items()):
                s.categories[f"tracer {tracer}"] = _summarise(records)
        s.curves_png = curves_figure(s.categories["all"])
    from evaluation.html_report.build import kit_commit, render
    html = render({"title": "autoPET V closed-loop report", "kit_commit": kit_commit(),
                   "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
                   "submissions": submissions, "board": leaderboard(submissions)}, template="loop_report.html.j2")
    with atomic_path(output) as tmp:
        tmp.write_text(html, encoding="utf-8")
    return Path(output)
