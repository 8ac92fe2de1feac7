"""Which report an edition whose studies run in steps gets: 2025's click curves, 2026's closed loops."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from petct.editions import Edition


def steps_report_builder(edition: Edition) -> Callable[[list[str], Path], Path] | None:
    """build(metrics, output) of the edition's report of step curves; None: the per-study report (2022, 2024)."""
    if edition.scribbles:
        from evaluation.html_report.loop_report import build_loop_report
        return build_loop_report
    if edition.clicks:
        from evaluation.html_report.click_report import build_click_report
        return build_click_report
    return None
