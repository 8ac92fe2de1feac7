"""The report of autoPET V (2026) closed loops: one self-contained HTML file over one or more dry runs' metrics.json.

Per submission: the interaction curves (mean Dice and DMM per step with their spread, and each study's
curve), the studies' areas and final values, and the two categories apart when both are there (simulated
scribbles; recorded ones, the clinicians' category), and each tracer apart where the study names carry it.
Across submissions the leaderboard of evaluation.loop_ranking.
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from evaluation.html_report import figures
from evaluation.loop_ranking import category, leaderboard, read_loop_submissions, summarise
from petct.atomic import atomic_path
from petct.nnunet_raw import tracer_of


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
    submissions = read_loop_submissions(metrics)
    for s in submissions:
        groups = {}
        for record in s.studies:
            groups.setdefault(category(record), []).append(record)
        if len(groups) > 1:
            for name, records in sorted(groups.items()):
                s.categories[name] = summarise(records)
        if any(tracer_of(record["study"]) for record in s.studies):  # the names say FDG or PSMA: each apart
            tracers = {}
            for record in s.studies:
                tracers.setdefault(tracer_of(record["study"]) or "none in the name", []).append(record)
            for tracer, records in sorted(tracers.items()):
                s.categories[f"tracer {tracer}"] = summarise(records)
        s.curves_png = curves_figure(s.categories["all"])
    from evaluation.html_report.build import kit_commit, render
    html = render({"title": "autoPET V closed-loop report", "kit_commit": kit_commit(),
                   "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
                   "submissions": submissions, "board": leaderboard(submissions)}, template="loop_report.html.j2")
    with atomic_path(output) as tmp:
        tmp.write_text(html, encoding="utf-8")
    return Path(output)
