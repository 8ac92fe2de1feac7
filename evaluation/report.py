"""metrics.json: per-study metrics under `case`, statistics under `aggregates`, and every problem."""
from __future__ import annotations

import sys
from pathlib import Path

from evaluation.aggregates import aggregate
from evaluation.pairing import Case
from evaluation.problems import Problem
from evaluation.scoring import StudyResult
from petct.jsonio import write_json_atomic


def build_report(results: list[tuple[Case, StudyResult]], problems: list[Problem]) -> dict:
    """The content of metrics.json (NaN becomes null when written)."""
    case = {}
    for item, result in sorted(results, key=lambda pair: pair[0].study):
        case[item.study] = {**result.to_json(), "job": item.job}
    return {
        "case": case,
        "aggregates": aggregate([result for _, result in results]),
        "errors": [problem.to_json() for problem in problems],
    }


def write_report(report: dict, path: Path) -> Path:
    """Write metrics.json atomically: readers never see half a file."""
    return write_json_atomic(report, path)


def print_problems(problems: list[Problem]) -> None:
    """One line per problem on stderr, so the platform's log shows why a study is missing."""
    for problem in problems:
        print(f"error: {problem.describe()}", file=sys.stderr)
